"""Data: sources (embedded, torchvision, folder), the DataModule and Albumentations pipelines."""
