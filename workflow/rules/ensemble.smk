# An ensemble run's maps: the mean of its members' maps, in results/infer/<key>/ like any run's, so
# tuning, evaluation and every later stage treat it alike. Validation is averaged on its own.
rule ensemble:
    input:
        members=get_ensemble_members(
            ["{subset}.npz", "{subset}_tiles.npz", "{subset}_presence.csv", "{subset}_infer.json"]
        ),
    output:
        probs="results/infer/{key}/{subset}.npz",
        tiles="results/infer/{key}/{subset}_tiles.npz",
        summary="results/infer/{key}/{subset}_infer.json",
        presence="results/infer/{key}/{subset}_presence.csv",
    log:
        "logs/infer/{key}_{subset}.log",
    wildcard_constraints:
        key=names_pattern(PLAN.jobs["ensemble"]),
    params:
        folders=get_ensemble_folders,
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "ensemble.py --members {params.folders} --subset {wildcards.subset} "
        "--out $(dirname {output.probs}) > {log} 2>&1"
