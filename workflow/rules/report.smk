# Stage 5: aggregate the per-job JSON records into tables, then render markdown and plots.
# Both read only small JSON/CSV files, never checkpoints.  `aggregate` is given the exact list of
# files of the current grid (via list files), so records left over from an earlier config are
# never mixed into the summary.

RECORDS = [record_json(g) for g in GRID]
CLEAN = sorted({clean_json(g["dataset"], g["target"], g["target_replica"]) for g in GRID})

MODEL_METRICS = [metrics_json(d, m, r) for d, m, r in models_in_use()]

# The fixed set of files `spkrobust report` writes (spkrobust.report.render.REPORT_FILES); each one is
# shown in `snakemake --report report.html` with the caption in workflow/report/.
_REPORT_CAPTIONS = {
    "index.md": ("index.rst", "Report"),
    "tables.md": ("tables.rst", "Report"),
    "claims.md": ("claims.rst", "Report"),
    "checks.md": ("checks.rst", "Report"),
    "acc_vs_eps.png": ("acc_vs_eps.rst", "Figures"),
    "heatmap.png": ("heatmap.rst", "Figures"),
    "acc_vs_T.png": ("acc_vs_T.rst", "Figures"),
    "acc_vs_leak.png": ("acc_vs_leak.rst", "Figures"),
}
REPORT_FILES = [report_item(f"results/report/{name}", rst, cat) for name, (rst, cat) in _REPORT_CAPTIONS.items()]


rule aggregate:
    input:
        sets=EVAL_DIRS,  # each evaluate job's folder; the list file names the grid's records in them
        clean=CLEAN,
        metrics=MODEL_METRICS,
        code=lib("report"),
    output:
        summary=report("results/report/summary.csv", caption=caption("summary.rst"), category="Tables"),
        models=report("results/report/models.csv", caption=caption("models.rst"), category="Tables"),
        records="results/report/records.json",
        lists=multiext("results/report/inputs/", "records.txt", "clean.txt", "metrics.txt"),
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    threads: 1
    params:
        aliases=to_json(ALIAS_ROWS),  # models trained once under an earlier name: models.csv says so
    run:
        # list files written here, not by `printf` in the shell: thousands of record paths would
        # exceed the kernel's limit on one command-line argument
        for path, items in zip(output.lists, (RECORDS, input.clean, input.metrics)):
            with open(path, "w") as f:
                f.write("".join(f"{item}\n" for item in items))
        shell(
            "python -m spkrobust aggregate --records-from {output.lists[0]} --clean-from {output.lists[1]} "
            "--metrics-from {output.lists[2]} --aliases {params.aliases:q} --out-dir results/report > {log} 2>&1"
        )


rule render_report:
    input:
        summary="results/report/summary.csv",
        models="results/report/models.csv",
        records="results/report/records.json",
        code=lib("report"),
    output:
        REPORT_FILES,
        description=DESCRIPTION,  # the report's first page (Snakefile: `report:`)
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    shell:
        "python -m spkrobust report --report-dir results/report > {log} 2>&1"
