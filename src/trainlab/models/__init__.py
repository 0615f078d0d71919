"""Networks (mlp, cnn, resnet), their building blocks and the classification LightningModule."""
