rule train:
    input:
        manifest=get_input("train", "preprocess", "manifest.csv"),
        split=get_subsets("train", "preprocess", "split.csv"),
    output:
        model="results/train/{key}/model.pt",
        curves="results/train/{key}/metrics_by_epoch.csv",
        lr="results/train/{key}/lr_by_step.csv",
        summary="results/train/{key}/train_summary.json",
    log:
        "logs/train/{key}.log",
    params:
        settings=get_settings("train"),
    threads: get_run_resource("train", "threads")
    resources:
        gpu=get_run_resource("train", "gpu"),
        gpu_model=get_run_resource("train", "gpu_model"),
        mem_mb=get_run_resource("train", "mem_mb", grows=True),
        runtime=get_run_resource("train", "runtime", grows=True),
    conda:
        "../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} train.py --manifest {input.manifest} --split {input.split} --settings {params.settings:q} "
        "--out $(dirname {output.model}) > {log} 2>&1"
