"""Train a digit classifier (scikit-learn's bundled 8x8 digits), one child run per regularisation strength.

Submitted with `edgewise run submit --experiment digits --source examples/train --wait`; started by hand
(`python train.py`) it logs offline to the console and ./edgewise-offline/.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
from edgewise.cloud import Run
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--c-values", type=float, nargs="+", default=[0.001, 0.01, 0.1, 1.0])
    parser.add_argument("--max-iter", type=int, default=200)
    args = parser.parse_args()

    run = Run.get_context()
    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    run.log("train_samples", len(x_train))
    run.log_list("c_values", args.c_values)

    best_model, best_accuracy = None, -1.0
    for c in args.c_values:
        with run.child_run(f"C={c}") as child:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=args.max_iter))
            model.fit(x_train, y_train)
            accuracy = float(model.score(x_test, y_test))
            child.log("accuracy", accuracy)
            child.set_tags({"C": str(c)})
        run.log("accuracy_by_c", accuracy)
        run.log_row("sweep", C=c, accuracy=accuracy)
        print(f"C={c}: accuracy {accuracy:.4f}")
        if accuracy > best_accuracy:
            best_model, best_accuracy = model, accuracy

    run.log("accuracy", best_accuracy)
    outputs = Path("outputs")
    outputs.mkdir(exist_ok=True)
    onnx_model = to_onnx(
        best_model,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={LogisticRegression: {"zipmap": False}},
        target_opset=17,
    )
    (outputs / "model.onnx").write_bytes(onnx_model.SerializeToString())
    with (outputs / "model.pkl").open("wb") as out:
        pickle.dump(best_model, out)
    print(f"best accuracy {best_accuracy:.4f}; wrote outputs/model.onnx and outputs/model.pkl")
    run.complete()


if __name__ == "__main__":
    main()
