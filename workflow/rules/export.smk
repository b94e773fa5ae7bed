# Predictions as files a viewer opens: each source image's format, size and NIfTI geometry.
rule export:
    input:
        manifest=get_input("export", "data", "manifest.csv"),
        probs_val=get_input("export", "infer", "val.npz"),
        probs_test=get_input("export", "infer", "test.npz"),
        locked=get_input("export", "tune", "locked.json"),
    output:
        val=directory("results/export/{key}/val"),
        test=directory("results/export/{key}/test"),
        record="results/export/{key}/export.json",
    log:
        "logs/export/{key}.log",
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "export.py --manifest {input.manifest} --probs-val {input.probs_val} "
        "--probs-test {input.probs_test} --locked {input.locked} "
        "--out $(dirname {output.record}) > {log} 2>&1"
