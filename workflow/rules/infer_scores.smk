# Regression runs: the score of every val and test image, averaged over mirror-flip TTA.
rule infer_scores:
    input:
        images=get_subsets("infer_scores", "preprocess", "images.csv"),
        preprocess=get_input("infer_scores", "preprocess", "preprocess.json"),
        model=get_input("infer_scores", "train", "model.pt"),
    output:
        scores="results/infer_scores/{key}/{subset}_scores.csv",
        summary="results/infer_scores/{key}/{subset}_infer.json",
    log:
        "logs/infer_scores/{key}_{subset}.log",
    params:
        settings=get_settings("infer_scores"),
    threads: get_run_resource("infer_scores", "threads")
    resources:
        gpu=get_run_resource("infer_scores", "gpu"),
        gpu_model=get_run_resource("infer_scores", "gpu_model"),
        mem_mb=get_run_resource("infer_scores", "mem_mb", grows=True),
        runtime=get_run_resource("infer_scores", "runtime", grows=True),
    conda:
        "../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} infer_scores.py --images {input.images} --preprocess {input.preprocess} "
        "--model {input.model} --settings {params.settings:q} --subset {wildcards.subset} "
        "--out $(dirname {output.scores}) > {log} 2>&1"
