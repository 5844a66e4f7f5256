# Stage 3: adversarial sets, crafted on a source model (every replica; replica 2 of a model is the
# black-box source against replica 1).  FGSM needs one input gradient per source: `grad` computes
# it once and `craft` turns it into a set for each eps, so adding an eps only crafts that eps.


rule grad:
    input:
        data=data_pt("{dataset}"),
        model=lambda wc: model_pt(wc.dataset, wc.source, wc.replica),
        code=lib("attacks"),
    output:
        grad_pt("{dataset}", "{source}", "{replica}"),
    log:
        "logs/{dataset}/grad/{source}/r{replica}.log",
    benchmark:
        "benchmarks/{dataset}/grad/{source}/r{replica}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=planned("grad", "mem_mb"),
        gpu_mem_mb=planned("grad", "gpu_mem_mb"),
        runtime=planned("grad", "runtime"),
        micro_batch=planned("grad", "micro_batch"),  # a resource, not a param: the cut changes no result
        time_chunk=planned("grad", "time_chunk"),
    params:
        cfg=lambda wc: cfg_json("grad", dataset=wc.dataset, source=wc.source, replica=wc.replica),
    shell:
        "python -m spkrobust grad --data {input.data} --model {input.model} --micro-batch {resources.micro_batch} --time-chunk {resources.time_chunk} --cfg {params.cfg:q} --out {output} > {log} 2>&1"


rule craft:
    input:
        unpack(grad_input),
        unpack(member_set_inputs),
        data=data_pt("{dataset}"),
        model=lambda wc: model_pt(wc.dataset, wc.source, wc.replica),
        code=lib("attacks"),
    output:
        adv_pt("{dataset}", "{source}", "{replica}", "{attack}", "{eps}"),
    log:
        "logs/{dataset}/craft/{source}/r{replica}/{attack}/{eps}.log",
    benchmark:
        "benchmarks/{dataset}/craft/{source}/r{replica}/{attack}/{eps}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=planned("craft", "mem_mb"),
        gpu_mem_mb=planned("craft", "gpu_mem_mb"),
        runtime=planned("craft", "runtime"),
        micro_batch=planned("craft", "micro_batch"),  # a resource, not a param: the cut changes no result
        time_chunk=planned("craft", "time_chunk"),
    params:
        attack=lambda wc: to_json(spk.attack_slice(config, wc.attack)),
        eps=lambda wc: str(EPS[wc.eps]),
        grad=lambda wc, input: f"--grad {input.grad}" if "grad" in input.keys() else "",
        sets=member_set_args,
        cfg=lambda wc: cfg_json("craft", dataset=wc.dataset, source=wc.source, replica=wc.replica),
    shell:
        "python -m spkrobust craft --data {input.data} --model {input.model} {params.grad} {params.sets} --attack-cfg {params.attack:q} --eps {params.eps:q} --micro-batch {resources.micro_batch} --time-chunk {resources.time_chunk} --cfg {params.cfg:q} --out {output} > {log} 2>&1"
