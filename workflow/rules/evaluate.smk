rule evaluate:
    input:
        manifest=get_input("evaluate", "data", "manifest.csv"),
        split=get_subsets("evaluate", "split", "split.csv"),
        probs_val=get_input("evaluate", "infer", "val.npz"),
        probs_test=get_input("evaluate", "infer", "test.npz"),
        locked=get_input("evaluate", "tune", "locked.json"),
        fusion=get_input("evaluate", "tune", "fusion.json"),
        presence_val=get_input("evaluate", "infer", "val_presence.csv"),
        presence_test=get_input("evaluate", "infer", "test_presence.csv"),
        tiles_manifest=get_input("evaluate", "preprocess", "manifest.csv"),
        tiles_split=get_subsets("evaluate", "preprocess", "split.csv"),
        tiles_images=get_subsets("evaluate", "preprocess", "images.csv"),
        tiles_val=get_input("evaluate", "infer", "val_tiles.npz"),
        tiles_test=get_input("evaluate", "infer", "test_tiles.npz"),
    output:
        per_image_val="results/evaluate/{key}/per_image_val.csv",
        per_image_test="results/evaluate/{key}/per_image_test.csv",
        lesions_val="results/evaluate/{key}/lesions_val.csv",
        lesions_test="results/evaluate/{key}/lesions_test.csv",
        summary="results/evaluate/{key}/summary.json",
        per_tile_val="results/evaluate/{key}/per_tile_val.csv",
        per_tile_test="results/evaluate/{key}/per_tile_test.csv",
        lesions_tiles_val="results/evaluate/{key}/lesions_tiles_val.csv",
        lesions_tiles_test="results/evaluate/{key}/lesions_tiles_test.csv",
        summary_tiles="results/evaluate/{key}/summary_tiles.json",
    log:
        "logs/evaluate/{key}.log",
    params:
        settings=get_settings("evaluate"),
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "evaluate.py --manifest {input.manifest} --split {input.split} "
        "--probs-val {input.probs_val} --probs-test {input.probs_test} --locked {input.locked} "
        "--fusion {input.fusion} --presence-val {input.presence_val} --presence-test {input.presence_test} "
        "--tiles-manifest {input.tiles_manifest} --tiles-split {input.tiles_split} "
        "--tiles-images {input.tiles_images} --tiles-val {input.tiles_val} --tiles-test {input.tiles_test} "
        "--settings {params.settings:q} --out $(dirname {output.summary}) > {log} 2>&1"
