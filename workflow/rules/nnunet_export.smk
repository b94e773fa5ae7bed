# Asked for by the config's nnunet_export section: nnU-Net trains elsewhere on exactly this split.
rule nnunet_export:
    input:
        manifest=get_input("nnunet_export", "data", "manifest.csv"),
        split=get_input("nnunet_export", "split", "split.csv"),
    output:
        folder=directory("results/nnunet_export/{key}"),
    log:
        "logs/nnunet_export/{key}.log",
    params:
        settings=get_settings("nnunet_export"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "nnunet_export.py --manifest {input.manifest} --split {input.split} "
        "--settings {params.settings:q} --out {output.folder} > {log} 2>&1"
