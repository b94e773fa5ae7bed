# A k-fold run's subsets (split.folds): its fold is val, the other folds train, test held out. The
# folds share the split and preprocessing; only these small tables differ between them.
rule fold:
    input:
        split=get_input("fold", "split", "split.csv"),
        item_split=get_input("fold", "preprocess", "split.csv"),
        images=get_input("fold", "preprocess", "images.csv"),
    output:
        split="results/fold/{key}/split.csv",
        item_split="results/fold/{key}/items_split.csv",
        images="results/fold/{key}/images.csv",
        summary="results/fold/{key}/split_summary.csv",
        record="results/fold/{key}/fold.json",
    log:
        "logs/fold/{key}.log",
    params:
        settings=get_settings("fold"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "fold.py --split {input.split} --items {input.item_split} --images {input.images} "
        "--settings {params.settings:q} --out $(dirname {output.split}) > {log} 2>&1"
