# Calibration is fitted on validation predictions only: the test split has no path into this rule.
rule calibrate:
    input:
        manifest=get_input("calibrate", "data", "manifest.csv"),
        split=get_subsets("calibrate", "split", "split.csv"),
        scores=get_input("calibrate", "infer_scores", "val_scores.csv"),
    output:
        calibration="results/calibrate/{key}/calibration.json",
    log:
        "logs/calibrate/{key}.log",
    params:
        settings=get_settings("calibrate"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "calibrate.py --manifest {input.manifest} --split {input.split} --scores {input.scores} "
        "--settings {params.settings:q} --out $(dirname {output.calibration}) > {log} 2>&1"
