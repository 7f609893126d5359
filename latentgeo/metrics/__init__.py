"""Offline sample-quality metrics: sliced Wasserstein, MMD, Frechet distance, and a Frechet distance on the
features of a small classifier the package trains itself (no downloaded weights). Real FID only with a
user-provided TorchScript Inception file (:func:`fid`)."""
from latentgeo.metrics.distances import (frechet_distance, frechet_distance_samples, gaussian_stats,
                                         median_bandwidth, mmd, sliced_wasserstein)
from latentgeo.metrics.classifier import (FeatureClassifier, classifier_accuracy, classifier_features,
                                          classifier_frechet_distance, fit_feature_classifier,
                                          load_or_fit_classifier)
from latentgeo.metrics.fid import TorchScriptFeatures, fid

__all__ = ["sliced_wasserstein", "mmd", "frechet_distance", "frechet_distance_samples", "gaussian_stats",
           "median_bandwidth", "FeatureClassifier", "fit_feature_classifier", "load_or_fit_classifier",
           "classifier_features", "classifier_frechet_distance", "classifier_accuracy", "TorchScriptFeatures", "fid"]
