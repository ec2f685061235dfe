"""Child process: keeps two cores busy training XGBoost, as another run on the same machine would, until killed."""

import numpy as np
import xgboost as xgb

if __name__ == "__main__":
    X = np.random.default_rng(0).normal(size=(200_000, 20))
    xgb.train({"max_depth": 10, "nthread": 2}, xgb.DMatrix(X, label=X[:, 0]), num_boost_round=100_000)
