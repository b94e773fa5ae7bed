# Tuning reads validation probabilities only: the test split has no path into this rule.
rule tune:
    input:
        manifest=get_input("tune", "data", "manifest.csv"),
        split=get_subsets("tune", "split", "split.csv"),
        probs=get_input("tune", "infer", "val.npz"),
        presence=get_input("tune", "infer", "val_presence.csv"),
    output:
        locked="results/tune/{key}/locked.json",
        fusion="results/tune/{key}/fusion.json",
        grid="results/tune/{key}/tuning_grid.csv",
    log:
        "logs/tune/{key}.log",
    params:
        settings=get_settings("tune"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "tune.py --manifest {input.manifest} --split {input.split} --probs {input.probs} "
        "--presence {input.presence} "
        "--settings {params.settings:q} --out $(dirname {output.locked}) > {log} 2>&1"
