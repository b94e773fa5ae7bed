# The notebook is named, not given by path: the scripts find it in the workflow (a path here
# would be this machine's, and the Snakemake report lists every rule's inputs).
rule analyse:
    input:
        per_image_val=get_input("analyse", "evaluate", "per_image_val.csv"),
        per_image_test=get_input("analyse", "evaluate", "per_image_test.csv"),
        lesions_test=get_input("analyse", "evaluate", "lesions_test.csv"),
        summary=get_input("analyse", "evaluate", "summary.json"),
        summary_tiles=get_input("analyse", "evaluate", "summary_tiles.json"),
        # An external run has no training: these two are then absent, and its import record is given.
        metrics_by_epoch=get_optional_input("analyse", "train", "metrics_by_epoch.csv"),
        train_summary=get_optional_input("analyse", "train", "train_summary.json"),
        predictions_record=get_import_record("analyse", "test_infer.json"),
        zero_dice_images=get_input("analyse", "breakdown", "zero_dice_images.csv"),
        zero_dice_summary=get_input("analyse", "breakdown", "zero_dice_summary.csv"),
        split_summary=get_subsets("analyse", "split", "split_summary.csv"),
        manifest=get_input("analyse", "data", "manifest.csv"),
        data_images=get_input("analyse", "data", "images.csv"),
        data_lesions=get_input("analyse", "data", "lesions.csv"),
        split=get_subsets("analyse", "split", "split.csv"),
        probs_test=get_input("analyse", "infer", "test.npz"),
        locked=get_input("analyse", "tune", "locked.json"),
    output:
        notebook="results/analyse/{key}/analysis.ipynb",
        html="results/analyse/{key}/analysis.html",
        figures=get_figures("analyse", "results/analyse/{key}"),
        vector_figures=get_figures("analyse", "results/analyse/{key}", "svg"),
    log:
        "logs/analyse/{key}.log",
    params:
        notebook=STAGES["analyse"].notebook,
        parameters=get_notebook_parameters("analyse", "Analysis"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "notebook.py --notebook {params.notebook} --parameters {params.parameters:q} "
        "--out $(dirname {output.html}) > {log} 2>&1"
