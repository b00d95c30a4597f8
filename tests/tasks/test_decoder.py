import json

import numpy as np
import pytest
import torch

from weightspace import Embedder, Zoo
from weightspace.symmetry import permute, rescale
from weightspace.tasks.merging.decoder import DecoderError, WeightDecoder


@pytest.fixture(scope="module")
def zoo(small_zoo):
    return Zoo.open(small_zoo)


@pytest.fixture(scope="module")
def mlp_ids(zoo):
    catalog = zoo.catalog
    ids = list(catalog.loc[catalog["architecture"] == "mlp-digits-s", "id"])
    assert len(ids) >= 3
    return ids


@pytest.fixture(scope="module")
def decoder(zoo, mlp_ids):
    return WeightDecoder(epochs=20, progress=False).fit(zoo, mlp_ids)


def _flat(module):
    return torch.cat([v.reshape(-1) for v in module.state_dict().values()])


def test_round_trip_shapes(zoo, mlp_ids, decoder):
    models = [zoo.load(i) for i in mlp_ids]
    z = decoder.encode(models)
    assert z.shape == (len(models), decoder.latent_dim) and np.isfinite(z).all()
    decoded = decoder.decode(z[0])
    reference = models[0]
    assert {k: v.shape for k, v in decoded.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    x = torch.randn(5, reference.spec["in_features"])
    assert decoded(x).shape == reference(x).shape
    assert not decoded.training
    assert len(decoder.decode_all(z)) == len(models)
    error = decoder.reconstruction_error(models)
    assert error.shape == (len(models),) and (error >= 0).all()


def test_targets_ignore_permutations_and_rescalings(zoo, mlp_ids, decoder):
    """The documented choice: canonical weights in the reference's unit order."""
    model = zoo.load(mlp_ids[-1])
    twin = rescale(permute(model, torch.Generator().manual_seed(3)), torch.Generator())
    z = decoder.encode([model, twin])
    np.testing.assert_allclose(z[0], z[1], atol=1e-4)
    unaligned = WeightDecoder(epochs=1, align=False, progress=False).fit(zoo, mlp_ids)
    z = unaligned.encode([model, twin])
    assert np.abs(z[0] - z[1]).max() > 1e-3  # without alignment the order leaks through


def test_save_load_round_trip(tmp_path, zoo, mlp_ids, decoder):
    decoder.save(tmp_path / "dec")
    loaded = WeightDecoder.load(tmp_path / "dec")
    models = [zoo.load(i) for i in mlp_ids]
    np.testing.assert_array_equal(loaded.encode(models), decoder.encode(models))
    z = decoder.encode(models)[1]
    assert torch.equal(_flat(loaded.decode(z)), _flat(decoder.decode(z)))
    config = json.loads((tmp_path / "dec" / "decoder.json").read_text())
    assert config["spec"] == models[0].spec and config["train_ids"] == mlp_ids


def test_frozen_embedder(tmp_path, zoo, mlp_ids, statnn_run):
    embedder = Embedder.load(statnn_run)
    dec = WeightDecoder(epochs=10, progress=False).fit(zoo, mlp_ids, embedder)
    models = [zoo.load(i) for i in mlp_ids[:2]]
    np.testing.assert_allclose(dec.encode(models), embedder.embed(models), atol=1e-6)
    dec.save(tmp_path / "dec")
    loaded = WeightDecoder.load(tmp_path / "dec")  # the recorded run is reloaded
    z = embedder.embed(models)[0]
    assert torch.equal(_flat(loaded.decode(z)), _flat(dec.decode(z)))


def test_errors(tmp_path, zoo, mlp_ids, decoder):
    other = [i for i in zoo.ids() if i not in mlp_ids][0]
    with pytest.raises(DecoderError, match="one architecture"):
        WeightDecoder(epochs=1).fit(zoo, [mlp_ids[0], other])
    with pytest.raises(DecoderError, match="at least 2"):
        WeightDecoder(epochs=1).fit(zoo, mlp_ids[:1])
    with pytest.raises(DecoderError, match="'epochs' parameter"):
        WeightDecoder(epochs=0).fit(zoo, mlp_ids)
    with pytest.raises(DecoderError, match="'val_fraction' parameter"):
        WeightDecoder(val_fraction=1.0).fit(zoo, mlp_ids)
    with pytest.raises(DecoderError, match=r"shape \[d\] with d=32"):
        decoder.decode(np.zeros(5))
    with pytest.raises(DecoderError, match="not a decoder directory"):
        WeightDecoder.load(tmp_path)
    decoder.save(tmp_path / "own")
    with pytest.raises(DecoderError, match="own encoder"):
        WeightDecoder.load(tmp_path / "own", embedder=object())
    with pytest.raises(DecoderError, match="not fitted"):
        WeightDecoder().decode(np.zeros(32))


def test_target_weights_are_what_reconstruction_error_measures(zoo, mlp_ids, decoder):
    models = [zoo.load(i) for i in mlp_ids[:3]]
    targets = decoder.target_weights(models)
    assert targets.shape == (3, len(decoder.target_mean_))
    decoded = torch.stack([_flat(m) for m in decoder.decode_all(decoder.encode(models))])
    expected = (decoded - targets).norm(dim=1) / targets.norm(dim=1)
    np.testing.assert_allclose(decoder.reconstruction_error(models), expected, rtol=1e-5)
    with pytest.raises(DecoderError, match="not fitted"):
        WeightDecoder().target_weights(models)
