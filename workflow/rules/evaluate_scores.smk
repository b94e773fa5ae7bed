rule evaluate_scores:
    input:
        manifest=get_input("evaluate_scores", "data", "manifest.csv"),
        split=get_subsets("evaluate_scores", "split", "split.csv"),
        scores_val=get_input("evaluate_scores", "infer_scores", "val_scores.csv"),
        scores_test=get_input("evaluate_scores", "infer_scores", "test_scores.csv"),
        calibration=get_input("evaluate_scores", "calibrate", "calibration.json"),
    output:
        per_case_val="results/evaluate_scores/{key}/per_case_val.csv",
        per_case_test="results/evaluate_scores/{key}/per_case_test.csv",
        summary="results/evaluate_scores/{key}/summary.json",
    log:
        "logs/evaluate_scores/{key}.log",
    params:
        settings=get_settings("evaluate_scores"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "evaluate_scores.py --manifest {input.manifest} --split {input.split} "
        "--scores-val {input.scores_val} --scores-test {input.scores_test} "
        "--calibration {input.calibration} --settings {params.settings:q} "
        "--out $(dirname {output.summary}) > {log} 2>&1"
