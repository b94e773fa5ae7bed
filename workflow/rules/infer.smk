rule infer:
    input:
        images=get_subsets("infer", "preprocess", "images.csv"),
        preprocess=get_input("infer", "preprocess", "preprocess.json"),
        model=get_input("infer", "train", "model.pt"),
    output:
        probs="results/infer/{key}/{subset}.npz",
        tiles="results/infer/{key}/{subset}_tiles.npz",
        summary="results/infer/{key}/{subset}_infer.json",
        presence="results/infer/{key}/{subset}_presence.csv",
    log:
        "logs/infer/{key}_{subset}.log",
    # The keys of model runs only: an external run's files here come from rule import_predictions.
    wildcard_constraints:
        key=names_pattern(PLAN.jobs["infer"]),
    params:
        settings=get_settings("infer"),
    threads: get_run_resource("infer", "threads")
    resources:
        gpu=get_run_resource("infer", "gpu"),
        gpu_model=get_run_resource("infer", "gpu_model"),
        mem_mb=get_run_resource("infer", "mem_mb", grows=True),
        runtime=get_run_resource("infer", "runtime", grows=True),
    conda:
        "../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} infer.py --images {input.images} --preprocess {input.preprocess} "
        "--model {input.model} --settings {params.settings:q} --subset {wildcards.subset} "
        "--out $(dirname {output.probs}) > {log} 2>&1"
