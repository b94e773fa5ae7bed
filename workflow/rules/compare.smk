rule compare:
    input:
        unpack(get_summaries),
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
        pairs=get_labelled_inputs,
        baseline=PLAN.baseline,
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "compare.py --summary {params.pairs} --baseline {params.baseline} "
        "--out $(dirname {output.table}) > {log} 2>&1"
