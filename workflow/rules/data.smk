rule data:
    output:
        manifest="results/data/{key}/manifest.csv",
        summary="results/data/{key}/data_summary.json",
        images="results/data/{key}/images.csv",
        lesions="results/data/{key}/lesions.csv",
    log:
        "logs/data/{key}.log",
    params:
        settings=get_settings("data"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "data.py --settings {params.settings:q} --out $(dirname {output.manifest}) > {log} 2>&1"
