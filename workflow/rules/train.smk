# Stage 2: models.  One rule per kind; the {model} wildcard is restricted to the names of that
# kind, so the three rules share one output layout without ambiguity.
#   ann     -> train_ann  (SGD on images)
#   convert -> convert    (threshold balancing of its `from:` ANN, same replica)
#   snn     -> train_snn  (spike-based BPTT, initialised from its `from:` model, same replica)


rule train_ann:
    input:
        data=data_pt("{dataset}"),
        code=lib("training"),
    output:
        model=model_pt("{dataset}", "{model}", "{replica}"),
        metrics=metrics_json("{dataset}", "{model}", "{replica}"),
    log:
        "logs/{dataset}/train_ann/{model}/r{replica}.log",
    benchmark:
        "benchmarks/{dataset}/train_ann/{model}/r{replica}.tsv"
    wildcard_constraints:
        model=_alt(models_of("ann")),
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=planned("train_ann", "mem_mb"),
        gpu_mem_mb=planned("train_ann", "gpu_mem_mb"),
        runtime=planned("train_ann", "runtime"),
    params:
        cfg=lambda wc: cfg_json("train-ann", dataset=wc.dataset, model=wc.model, replica=wc.replica),
    shell:
        "python -m spkrobust train-ann --data {input.data} --cfg {params.cfg:q} --out {output.model} --metrics {output.metrics} > {log} 2>&1"


rule convert:
    input:
        data=data_pt("{dataset}"),
        ann=parent_pt,
        code=lib("training"),
    output:
        model=model_pt("{dataset}", "{model}", "{replica}"),
        metrics=metrics_json("{dataset}", "{model}", "{replica}"),
    log:
        "logs/{dataset}/convert/{model}/r{replica}.log",
    benchmark:
        "benchmarks/{dataset}/convert/{model}/r{replica}.tsv"
    wildcard_constraints:
        model=_alt(models_of("convert")),
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=planned("convert", "mem_mb"),
        gpu_mem_mb=planned("convert", "gpu_mem_mb"),
        runtime=planned("convert", "runtime"),
        micro_batch=planned("convert", "micro_batch"),  # a resource, not a param: the cut changes no result
        time_chunk=planned("convert", "time_chunk"),
    params:
        cfg=lambda wc: cfg_json("convert", dataset=wc.dataset, model=wc.model, replica=wc.replica),
    shell:
        "python -m spkrobust convert --data {input.data} --ann {input.ann} --micro-batch {resources.micro_batch} --time-chunk {resources.time_chunk} --cfg {params.cfg:q} --out {output.model} --metrics {output.metrics} > {log} 2>&1"


rule train_snn:
    input:
        unpack(init_inputs),
        data=data_pt("{dataset}"),
        code=lib("training"),
    output:
        model=model_pt("{dataset}", "{model}", "{replica}"),
        metrics=metrics_json("{dataset}", "{model}", "{replica}"),
    log:
        "logs/{dataset}/train_snn/{model}/r{replica}.log",
    benchmark:
        "benchmarks/{dataset}/train_snn/{model}/r{replica}.tsv"
    wildcard_constraints:
        model=_alt(models_of("snn")),
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=planned("train_snn", "mem_mb"),
        gpu_mem_mb=planned("train_snn", "gpu_mem_mb"),
        runtime=planned("train_snn", "runtime"),
        micro_batch=planned("train_snn", "micro_batch"),  # a resource, not a param: the cut changes no result
        time_chunk=planned("train_snn", "time_chunk"),
    params:
        cfg=lambda wc: cfg_json("train-snn", dataset=wc.dataset, model=wc.model, replica=wc.replica),
        init=lambda wc, input: f"--init {input.init}" if "init" in input.keys() else "",
    shell:
        "python -m spkrobust train-snn --data {input.data} {params.init} --micro-batch {resources.micro_batch} --time-chunk {resources.time_chunk} --cfg {params.cfg:q} --out {output.model} --metrics {output.metrics} > {log} 2>&1"
