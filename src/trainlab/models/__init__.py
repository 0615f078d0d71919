"""Networks (mlp, cnn, resnet, the timm adapter), their building blocks, and the study
LightningModules: StudyModule (network, optimizer, parameter groups, schedule) and the objectives
built on it (Classifier, NoisyRegression)."""
