# A run's name is a view onto keyed artifacts: renaming a run rebuilds only this view.
rule run_view:
    input:
        unpack(get_run_artifacts),
    output:
        index="results/runs/{name}/index.json",
        curves=report(
            "results/runs/{name}/training_curves.png",
            caption="../report/training_curves.rst",
            category="{name}",
        ),
        per_image=report(
            "results/runs/{name}/per_image_test.csv",
            caption="../report/per_image.rst",
            category="{name}",
        ),
        zero_dice=report(
            "results/runs/{name}/zero_dice_summary.csv",
            caption="../report/zero_dice.rst",
            category="{name}",
        ),
        analysis=report(
            "results/runs/{name}/analysis.html",
            caption="../report/analysis.rst",
            category="{name}",
        ),
    log:
        "logs/runs/{name}.log",
    params:
        record=get_run_record,
        artifacts=get_labelled_inputs,
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "run_view.py --record {params.record:q} --artifacts {params.artifacts} "
        "--out $(dirname {output.index}) > {log} 2>&1"
