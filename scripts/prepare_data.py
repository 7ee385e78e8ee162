"""Stage prepare_data: read one split of the dataset once, cache sharp + blurred tensors.

The files are found through ``dataset.root`` in the config, deliberately not through the
params: the params hold what the data are (raw files' MD5 sums, subset, blur), so that
pointing ``dataset.root`` at another folder with the same files reruns nothing.
"""

from critperiods.pipeline.stage import setup
from critperiods.train.data import prepare_split, save_prepared

sm = snakemake  # noqa: F821 - injected by Snakemake
setup(sm)
p = sm.params.data
prepared = prepare_split(p["name"], sm.config["dataset"]["root"], p["split"], p["subset"],
                         p["blur_size"], expected_raw=p["raw"])
prepared.meta["code"] = sm.params.code
save_prepared(prepared, sm.output[0])
