#!/usr/bin/env python3
"""Times scikit-learn's equivalents of sluice's ML algorithms, for comparison.

Usage: python3 scripts/ml_reference.py CSV TARGET_COLUMN TASK    (TASK: classification|regression)

Trains each applicable algorithm on the CSV (every other column a numeric feature) with the
same hyper-parameters as sluice's defaults, single-threaded, and prints one JSON object of fit
times in seconds: {"linear_regression": 0.01, ...}.

What is timed is what sluice's report.fit_ms times: the preprocessing's fit and transform
(StandardScaler().fit_transform on the features, and for the regressors that fit a standardized
target, that standardization) plus the estimator's fit. Reading the CSV and scoring the model
are not timed. For auto: the scaling, the whole cross-validation (every candidate's fits and
fold predictions) and the winner's refit on all rows.

The mapping (sluice default -> scikit-learn):
- linear_regression: solver cholesky       -> LinearRegression()
- logistic_regression: alpha 1.0           -> LogisticRegression(C=1.0, solver="lbfgs")
- svm: rbf, gamma 1/features, c 1, tol 1e-3 (classification)
                                           -> SVC(C=1, kernel="rbf", gamma=1/features, tol=1e-3)
       epsilon 0.1 on a standardized target (regression)
                                           -> SVR(C=1, epsilon=0.1, gamma=1/features, tol=1e-3)
                                              on the standardized target
       (sluice's SVM is its own SMO solver, libsvm's algorithm: WSS2, shrinking, a kernel
       cache of 256 MiB against scikit-learn's 200 MB)
- decision_tree: unlimited depth, min_samples_leaf 1, min_samples_split 2, gini
                                           -> DecisionTreeClassifier/Regressor(same)
- random_forest: 100 trees, max_features sqrt(d) (classification) or d/3 (regression)
                                           -> RandomForestClassifier/Regressor(n_estimators=100,
                                              max_features=same count, n_jobs=1)
- knn: k 5, uniform, Euclidean             -> KNeighborsClassifier/Regressor(5, n_jobs=1)
       (fit only: above 15 features both search by brute force and build nothing; below,
       sluice builds a cover tree, scikit-learn a KD or ball tree)
- naive_bayes: var_smoothing 1e-9          -> GaussianNB(var_smoothing=1e-9)
- mlp: hidden [64, 64], relu, adam, learning_rate 1e-3, alpha 1e-4, batch 200, epochs 200,
       tol 1e-4, patience 10               -> MLPClassifier/Regressor(same; regression on the
                                              standardized target). sluice's adds a linear skip
                                              connection and at least 3000 Adam steps, which
                                              only matter on small data.
- auto: 5-fold CV (stratified for classification, shuffled, seed 0) over the candidates above;
        above 2000 rows random_forest uses 30 trees and mlp at most 50 epochs with patience 5,
        the others their defaults (svm included, in both); then the winner refitted on all rows.
        Timed whole.
"""

import json
import math
import os
import sys
import time
import warnings

# Single-threaded, BLAS included, before numpy loads it.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.model_selection import KFold, StratifiedKFold  # noqa: E402
from sklearn.naive_bayes import GaussianNB  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC, SVR  # noqa: E402
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402


def candidates(task, d, light=False):
    gamma = 1.0 / d
    mlp = dict(hidden_layer_sizes=(64, 64), activation="relu", solver="adam",
               learning_rate_init=1e-3, alpha=1e-4, batch_size=200,
               max_iter=50 if light else 200, tol=1e-4,
               n_iter_no_change=5 if light else 10, random_state=0)
    trees = 30 if light else 100
    if task == "classification":
        return {
            "logistic_regression": LogisticRegression(C=1.0, solver="lbfgs", max_iter=100),
            "svm": SVC(C=1.0, kernel="rbf", gamma=gamma, tol=1e-3),
            "decision_tree": DecisionTreeClassifier(random_state=0),
            "random_forest": RandomForestClassifier(
                n_estimators=trees, max_features=max(1, int(math.sqrt(d))), n_jobs=1,
                random_state=0),
            "knn": KNeighborsClassifier(n_neighbors=5, n_jobs=1),
            "naive_bayes": GaussianNB(var_smoothing=1e-9),
            "mlp": MLPClassifier(**mlp),
        }
    return {
        "linear_regression": LinearRegression(),
        "svm": SVR(C=1.0, epsilon=0.1, kernel="rbf", gamma=gamma, tol=1e-3),
        "decision_tree": DecisionTreeRegressor(random_state=0),
        "random_forest": RandomForestRegressor(
            n_estimators=trees, max_features=max(1, d // 3), n_jobs=1, random_state=0),
        "knn": KNeighborsRegressor(n_neighbors=5, n_jobs=1),
        "mlp": MLPRegressor(**mlp),
    }


def standardized(y):
    return (y - y.mean()) / (y.std() or 1.0)


def auto(task, raw, y):
    x = StandardScaler().fit_transform(raw)
    if task == "regression":
        # Every regressor scores the same on it (R² is scale-free); svm and mlp need it.
        y = standardized(y)
    light = len(y) > 2000
    folds = (StratifiedKFold(5, shuffle=True, random_state=0) if task == "classification"
             else KFold(5, shuffle=True, random_state=0))
    metric = accuracy_score if task == "classification" else r2_score
    scored = {}
    for name, model in candidates(task, x.shape[1], light).items():
        values = []
        for train, test in folds.split(x, y):
            m = clone(model).fit(x[train], y[train])
            values.append(metric(y[test], m.predict(x[test])))
        scored[name] = float(np.mean(values))
    best = max(scored, key=scored.get)
    clone(candidates(task, x.shape[1])[best]).fit(x, y)


# The regressors sluice fits on a standardized target.
STANDARDIZED_TARGET = ("svm", "mlp")


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("classification", "regression"):
        sys.exit(__doc__)
    path, target, task = sys.argv[1:]
    # Capped epochs warn of non-convergence; the timing is what is wanted.
    warnings.filterwarnings("ignore")
    frame = pd.read_csv(path)
    y = frame.pop(target).to_numpy()
    raw = frame.to_numpy(dtype=float)
    times = {}
    for name, model in candidates(task, raw.shape[1]).items():
        started = time.perf_counter()
        x = StandardScaler().fit_transform(raw)
        fitted_y = (standardized(y) if task == "regression" and name in STANDARDIZED_TARGET
                    else y)
        model.fit(x, fitted_y)
        times[name] = round(time.perf_counter() - started, 4)
    started = time.perf_counter()
    auto(task, raw, y)
    times["auto"] = round(time.perf_counter() - started, 4)
    print(json.dumps(times))


if __name__ == "__main__":
    main()
