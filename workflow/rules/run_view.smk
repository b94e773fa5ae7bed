# A run's name is a view onto keyed artifacts: renaming a run rebuilds only this view.
# Segmentation and regression runs have views of their own rule, told apart by the run's name.
rule run_view:
    input:
        unpack(get_run_artifacts),
    wildcard_constraints:
        name=names_pattern(PLAN.runs_of("evaluate")),
    output:
        index="results/runs/{name}/index.json",
        figures=report(
            directory("results/runs/{name}/figures"),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="{name}",
            subcategory="Figures",
        ),
        analysis=report(
            "results/runs/{name}/analysis.html",
            caption="../report/analysis.rst",
            category="{name}",
            subcategory="Notebooks",
        ),
        training_report=report(
            "results/runs/{name}/training_report.html",
            caption="../report/training_report.rst",
            category="{name}",
            subcategory="Notebooks",
        ),
        per_image=report(
            "results/runs/{name}/per_image_test.csv",
            caption="../report/per_image.rst",
            category="{name}",
            subcategory="Tables",
        ),
        lesions=report(
            "results/runs/{name}/lesions_test.csv",
            caption="../report/lesions.rst",
            category="{name}",
            subcategory="Tables",
        ),
        zero_dice=report(
            "results/runs/{name}/zero_dice_summary.csv",
            caption="../report/zero_dice.rst",
            category="{name}",
            subcategory="Tables",
        ),
    log:
        "logs/runs/{name}.log",
    params:
        record=get_run_record,
        artifacts=get_labelled_inputs,
        run_keys=get_run_keys,
        dataset=PLAN.dataset_fingerprint,
        code=get_code("run_view"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "run_view.py --record {params.record:q} --artifacts {params.artifacts} "
        "--out $(dirname {output.index}) > {log} 2>&1"

