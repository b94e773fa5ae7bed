rule infer:
    input:
        manifest=get_input("infer", "data", "manifest.csv"),
        split=get_input("infer", "split", "split.csv"),
        model=get_input("infer", "train", "model.pt"),
    output:
        probs="results/infer/{key}/{subset}.npz",
    log:
        "logs/infer/{key}_{subset}.log",
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
        "OMP_NUM_THREADS={threads} infer.py --manifest {input.manifest} --split {input.split} --model {input.model} "
        "--settings {params.settings:q} --subset {wildcards.subset} --out {output.probs} > {log} 2>&1"
