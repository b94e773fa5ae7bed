rule breakdown:
    input:
        per_image=get_input("breakdown", "evaluate", "per_image_test.csv"),
    output:
        images="results/breakdown/{key}/zero_dice_images.csv",
        summary="results/breakdown/{key}/zero_dice_summary.csv",
        record="results/breakdown/{key}/zero_dice.json",
    log:
        "logs/breakdown/{key}.log",
    conda:
        "../envs/lesionflow.yaml"
    shell:
        "breakdown.py --per-image {input.per_image} --out $(dirname {output.summary}) > {log} 2>&1"
