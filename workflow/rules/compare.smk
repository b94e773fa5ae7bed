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


rule compare_report:
    input:
        notebook=NOTEBOOKS["compare_report"],
        leaderboard="results/compare/leaderboard.csv",
    output:
        notebook="results/compare/compare.ipynb",
        html=report(
            "results/compare/compare.html",
            caption="../report/compare.rst",
            category="Leaderboard",
        ),
        forest=report(
            "results/compare/figures/forest.png",
            caption="../report/compare_figures.rst",
            category="Leaderboard",
        ),
        figures=report(
            "results/compare/figures/paired_deltas.png",
            caption="../report/compare_figures.rst",
            category="Leaderboard",
        ),
        vector_figures=get_figures("compare_report", "results/compare", "svg"),
    log:
        "logs/compare/compare_report.log",
    params:
        parameters=get_notebook_parameters("compare_report", "Comparison of runs"),
        code=get_code("compare_report"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "notebook.py --notebook {input.notebook} --parameters {params.parameters:q} "
        "--out $(dirname {output.html}) > {log} 2>&1"
