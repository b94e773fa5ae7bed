rule split:
    input:
        manifest=get_input("split", "data", "manifest.csv"),
    output:
        split="results/split/{key}/split.csv",
        summary=report(
            "results/split/{key}/split_summary.csv",
            caption="../report/split_summary.rst",
            category="Data and split",
        ),
    log:
        "logs/split/{key}.log",
    params:
        settings=get_settings("split"),
        dataset=PLAN.dataset_fingerprint,
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "split.py --manifest {input.manifest} --settings {params.settings:q} "
        "--out $(dirname {output.split}) > {log} 2>&1"
