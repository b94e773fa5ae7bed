# Segmentation runs are ranked in leaderboard.csv, regression runs in leaderboard_regression.csv;
# a table without runs of its task is written with its header only.
rule compare:
    input:
        summaries=get_evaluation_files(RANKED_FILES["summary"]),
        per_image=get_evaluation_files(RANKED_FILES["per_image"]),
        score_summaries=get_evaluation_files("summary.json", "evaluate_scores"),
        per_case=get_evaluation_files("per_case_test.csv", "evaluate_scores"),
        imports=get_import_files,
        oof_per_image=get_fold_files("per_image_val.csv"),
        oof_lesions=get_fold_files("lesions_val.csv"),
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
        page=report(
            "results/compare/leaderboard.html",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
        ),
        groups="results/compare/leaderboard_groups.csv",
        folds="results/compare/leaderboard_folds.csv",
        regression_page="results/compare/leaderboard_regression.html",
        regression_groups="results/compare/leaderboard_regression_groups.csv",
        regression=report(
            "results/compare/leaderboard_regression.csv",
            caption="../report/leaderboard_regression.rst",
            category="Leaderboard",
        ),
    log:
        "logs/compare/leaderboard.log",
    params:
        summaries=get_labelled(RANKED_FILES["summary"], flag="--summary"),
        per_image=get_labelled(RANKED_FILES["per_image"], flag="--per-image"),
        score_summaries=get_labelled("summary.json", "evaluate_scores", "--score-summary"),
        per_case=get_labelled("per_case_test.csv", "evaluate_scores", "--per-case"),
        imports=get_labelled_imports,
        oof_per_image=get_labelled_folds("per_image_val.csv", "--oof-per-image"),
        oof_lesions=get_labelled_folds("lesions_val.csv", "--oof-lesions"),
        baseline=BASELINES["evaluate"] or "",
        score_baseline=BASELINES["evaluate_scores"] or "",
        settings=get_compare_settings,
        code=get_code("compare"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "compare.py {params.summaries} {params.per_image} {params.score_summaries} {params.per_case} "
        "{params.imports} {params.oof_per_image} {params.oof_lesions} "
        "--baseline '{params.baseline}' --score-baseline '{params.score_baseline}' "
        "--settings {params.settings:q} --out $(dirname {output.table}) > {log} 2>&1"
