# Tiles inherit their source image's subset from the split: no tile of a test image is trained on.
rule preprocess:
    input:
        manifest=get_input("preprocess", "data", "manifest.csv"),
        split=get_input("preprocess", "split", "split.csv"),
    output:
        manifest="results/preprocess/{key}/manifest.csv",
        split="results/preprocess/{key}/split.csv",
        images="results/preprocess/{key}/images.csv",
        record="results/preprocess/{key}/preprocess.json",
    log:
        "logs/preprocess/{key}.log",
    params:
        settings=get_settings("preprocess"),
    conda:
        "../envs/torch.yaml"
    shell:
        "preprocess.py --manifest {input.manifest} --split {input.split} "
        "--settings {params.settings:q} --out $(dirname {output.manifest}) > {log} 2>&1"
