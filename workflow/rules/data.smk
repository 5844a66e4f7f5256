# Stage 1: prepare a dataset once (canonical, seeded subsets) -> results/{dataset}/data.pt


rule prepare:
    input:
        code=lib("data"),
    output:
        data_pt("{dataset}"),
    log:
        "logs/{dataset}/prepare.log",
    benchmark:
        "benchmarks/{dataset}/prepare.tsv"
    threads: 1
    resources:
        mem_mb=planned("prepare", "mem_mb"),
        gpu_mem_mb=planned("prepare", "gpu_mem_mb"),
        runtime=planned("prepare", "runtime"),
    params:
        cfg=lambda wc: cfg_json("prepare", dataset=wc.dataset),
    shell:
        "python -m spkrobust prepare --dataset {wildcards.dataset} --cfg {params.cfg:q} --out {output} > {log} 2>&1"
