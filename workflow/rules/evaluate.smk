# Stage 4: accuracy.  Clean accuracy once per target model; then one job per adversarial set that
# writes one record per target the grid pairs the set with, into the set's folder.  Evaluation jobs are small: `group: "evaluate"` lets a cluster profile pack many of them
# into one job (group-components), locally it has no effect.


rule clean:
    input:
        data=data_pt("{dataset}"),
        model=lambda wc: model_pt(wc.dataset, wc.model, wc.replica),  # an alias reads the model it shares
        code=lib("evaluation"),
    output:
        clean_json("{dataset}", "{model}", "{replica}"),
    log:
        "logs/{dataset}/clean/{model}/r{replica}.log",
    benchmark:
        "benchmarks/{dataset}/clean/{model}/r{replica}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=planned("clean", "mem_mb"),
        gpu_mem_mb=planned("clean", "gpu_mem_mb"),
        runtime=planned("clean", "runtime"),
        micro_batch=planned("clean", "micro_batch"),  # a resource, not a param: the cut changes no result
        time_chunk=planned("clean", "time_chunk"),
    params:
        cfg=lambda wc: cfg_json("clean", dataset=wc.dataset, model=wc.model, replica=wc.replica),
    shell:
        "python -m spkrobust clean --data {input.data} --model {input.model} --micro-batch {resources.micro_batch} --time-chunk {resources.time_chunk} --cfg {params.cfg:q} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        unpack(eval_target_inputs),
        data=data_pt("{dataset}"),
        adv=adv_pt("{dataset}", "{source}", "{sr}", "{attack}", "{eps}"),
        code=lib("evaluation"),
    output:
        directory(eval_dir("{dataset}", "{source}", "{sr}", "{attack}", "{eps}")),
    log:
        "logs/{dataset}/evaluate/{source}/r{sr}/{attack}/{eps}.log",
    benchmark:
        "benchmarks/{dataset}/evaluate/{source}/r{sr}/{attack}/{eps}.tsv"
    group:
        "evaluate"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=planned("evaluate", "mem_mb"),
        gpu_mem_mb=planned("evaluate", "gpu_mem_mb"),
        runtime=planned("evaluate", "runtime"),
        micro_batch=planned("evaluate", "micro_batch"),  # a resource, not a param: the cut changes no result
        time_chunk=planned("evaluate", "time_chunk"),
    params:
        cfg=lambda wc: cfg_json(
            "evaluate",
            dataset=wc.dataset,
            source=wc.source,
            source_replica=wc.sr,
            attack=wc.attack,
            eps=wc.eps,
        ),
        outs=eval_record_outs,
    shell:
        "python -m spkrobust evaluate --data {input.data} --adv {input.adv} --target {input.targets} --clean {input.clean} --micro-batch {resources.micro_batch} --time-chunk {resources.time_chunk} --cfg {params.cfg:q} --out {params.outs} > {log} 2>&1"
