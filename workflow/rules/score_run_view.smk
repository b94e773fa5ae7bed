# The view of a regression run: its regression notebook, training report and per-case table.
rule score_run_view:
    input:
        unpack(get_score_run_artifacts),
    wildcard_constraints:
        name=names_pattern(PLAN.runs_of("evaluate_scores")),
    output:
        index="results/runs/{name}/index.json",
        figures=report(
            directory("results/runs/{name}/figures"),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="{name}",
            subcategory="Figures",
        ),
        regression=report(
            "results/runs/{name}/regression.html",
            caption="../report/regression.rst",
            category="{name}",
            subcategory="Notebooks",
        ),
        training_report=report(
            "results/runs/{name}/training_report.html",
            caption="../report/training_report.rst",
            category="{name}",
            subcategory="Notebooks",
        ),
        per_case=report(
            "results/runs/{name}/per_case_test.csv",
            caption="../report/per_case.rst",
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
