rule training_report:
    input:
        metrics_by_epoch=get_input("training_report", "train", "metrics_by_epoch.csv"),
        lr_by_step=get_input("training_report", "train", "lr_by_step.csv"),
        train_summary=get_input("training_report", "train", "train_summary.json"),
    output:
        notebook="results/training_report/{key}/training_report.ipynb",
        html="results/training_report/{key}/training_report.html",
        figures=get_figures("training_report", "results/training_report/{key}"),
        vector_figures=get_figures("training_report", "results/training_report/{key}", "svg"),
    log:
        "logs/training_report/{key}.log",
    params:
        notebook=STAGES["training_report"].notebook,
        parameters=get_notebook_parameters("training_report", "Training report"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "notebook.py --notebook {params.notebook} --parameters {params.parameters:q} "
        "--out $(dirname {output.html}) > {log} 2>&1"
