rule analyse_scores:
    input:
        per_case_val=get_input("analyse_scores", "evaluate_scores", "per_case_val.csv"),
        per_case_test=get_input("analyse_scores", "evaluate_scores", "per_case_test.csv"),
        summary=get_input("analyse_scores", "evaluate_scores", "summary.json"),
        calibration=get_input("analyse_scores", "calibrate", "calibration.json"),
        metrics_by_epoch=get_input("analyse_scores", "train", "metrics_by_epoch.csv"),
        train_summary=get_input("analyse_scores", "train", "train_summary.json"),
        split_summary=get_subsets("analyse_scores", "split", "split_summary.csv"),
        manifest=get_input("analyse_scores", "data", "manifest.csv"),
    output:
        notebook="results/analyse_scores/{key}/regression.ipynb",
        html="results/analyse_scores/{key}/regression.html",
        figures=get_figures("analyse_scores", "results/analyse_scores/{key}"),
        vector_figures=get_figures("analyse_scores", "results/analyse_scores/{key}", "svg"),
    log:
        "logs/analyse_scores/{key}.log",
    params:
        notebook=STAGES["analyse_scores"].notebook,
        parameters=get_notebook_parameters("analyse_scores", "Regression analysis"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "notebook.py --notebook {params.notebook} --parameters {params.parameters:q} "
        "--out $(dirname {output.html}) > {log} 2>&1"
