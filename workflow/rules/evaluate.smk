rule evaluate:
    input:
        manifest=get_input("evaluate", "data", "manifest.csv"),
        split=get_input("evaluate", "split", "split.csv"),
        probs_val=get_input("evaluate", "infer", "val.npz"),
        probs_test=get_input("evaluate", "infer", "test.npz"),
        locked=get_input("evaluate", "tune", "locked.json"),
    output:
        per_image_val="results/evaluate/{key}/per_image_val.csv",
        per_image_test="results/evaluate/{key}/per_image_test.csv",
        lesions_val="results/evaluate/{key}/lesions_val.csv",
        lesions_test="results/evaluate/{key}/lesions_test.csv",
        summary="results/evaluate/{key}/summary.json",
    log:
        "logs/evaluate/{key}.log",
    params:
        settings=get_settings("evaluate"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "evaluate.py --manifest {input.manifest} --split {input.split} "
        "--probs-val {input.probs_val} --probs-test {input.probs_test} --locked {input.locked} "
        "--settings {params.settings:q} --out $(dirname {output.summary}) > {log} 2>&1"
