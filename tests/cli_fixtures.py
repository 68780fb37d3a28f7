"""A minimal LightningModule/DataModule pair the CLI tests train for a few steps (regression on a fixed line)."""

import lightning as L
import torch


class LineData(L.LightningDataModule):
    def __init__(self, n: int = 64, batch_size: int = 16, slope: float = 3.0) -> None:
        super().__init__()
        self.n, self.batch_size, self.slope = n, batch_size, slope

    def _loader(self) -> torch.utils.data.DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.n, 1, generator=g)
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, self.slope * x), batch_size=self.batch_size
        )

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()


class LineModel(L.LightningModule):
    def __init__(self, lr: float = 0.1, test_scale: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(1, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/mse", loss)
        return loss

    def test_step(self, batch, _):
        x, y = batch
        self.log("test/mse", torch.nn.functional.mse_loss(self.hparams.test_scale * self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
