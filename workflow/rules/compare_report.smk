rule compare_report:
    input:
        leaderboard="results/compare/leaderboard.csv",
        leaderboard_regression="results/compare/leaderboard_regression.csv",
        leaderboard_html="results/compare/leaderboard.html",
        leaderboard_regression_html="results/compare/leaderboard_regression.html",
        leaderboard_folds="results/compare/leaderboard_folds.csv",
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
        forest_regression=report(
            "results/compare/figures/forest_regression.png",
            caption="../report/compare_figures.rst",
            category="Leaderboard",
        ),
        paired_deltas_regression=report(
            "results/compare/figures/paired_deltas_regression.png",
            caption="../report/compare_figures.rst",
            category="Leaderboard",
        ),
        vector_figures=get_figures("compare_report", "results/compare", "svg"),
    log:
        "logs/compare/compare_report.log",
    params:
        notebook=STAGES["compare_report"].notebook,
        parameters=get_notebook_parameters("compare_report", "Comparison of runs"),
        code=get_code("compare_report"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "notebook.py --notebook {params.notebook} --parameters {params.parameters:q} "
        "--out $(dirname {output.html}) > {log} 2>&1"
