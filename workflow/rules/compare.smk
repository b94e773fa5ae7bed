rule compare:
    input:
        summaries=get_evaluation_files(RANKED_FILES["summary"]),
        per_image=get_evaluation_files(RANKED_FILES["per_image"]),
    output:
        table=report(
            "results/compare/leaderboard.csv",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
        ),
        figure=report(
            "results/compare/leaderboard.png",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
        ),
    log:
        "logs/compare/leaderboard.log",
    params:
        summaries=get_labelled(RANKED_FILES["summary"]),
        per_image=get_labelled(RANKED_FILES["per_image"]),
        baseline=PLAN.baseline,
        settings=get_compare_settings,
        code=get_code("compare"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "compare.py --summary {params.summaries} --per-image {params.per_image} "
        "--baseline {params.baseline} --settings {params.settings:q} "
        "--out $(dirname {output.table}) > {log} 2>&1"
