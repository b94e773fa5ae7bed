# An external run's predictions (another tool's folder) take the place of a model's: the same files
# in results/infer/<key>/, so tuning, evaluation and every later stage treat both alike. Tuning
# imports validation only: test files are neither read nor checked there.
rule import_predictions:
    input:
        images=get_input("import_predictions", "data", "images.csv"),
        split=get_input("import_predictions", "split", "split.csv"),
    output:
        probs="results/infer/{key}/{subset}.npz",
        tiles="results/infer/{key}/{subset}_tiles.npz",
        summary="results/infer/{key}/{subset}_infer.json",
        presence="results/infer/{key}/{subset}_presence.csv",
    log:
        "logs/infer/{key}_{subset}.log",
    wildcard_constraints:
        key=names_pattern(PLAN.jobs["import_predictions"]),
    params:
        settings=get_settings("import_predictions"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "import_predictions.py --images {input.images} --split {input.split} "
        "--settings {params.settings:q} --subset {wildcards.subset} "
        "--out $(dirname {output.probs}) > {log} 2>&1"
