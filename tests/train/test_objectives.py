import math

import pytest
import torch

import weightspace as ws
from weightspace.featurize import Featurizer
from weightspace.objectives import info_nce, make_view, masked_mse


def test_info_nce_matches_its_definition():
    torch.manual_seed(0)
    z1, z2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / 0.5
    expected = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        others = [j for j in range(6) if j != i]
        expected += -sim[i, partner] + torch.logsumexp(sim[i, others], 0)
    assert math.isclose(float(info_nce(z1, z2, 0.5)), float(expected) / 6, rel_tol=1e-12)


def test_info_nce_is_low_for_matching_views_and_high_for_swapped():
    z = torch.eye(4)
    assert float(info_nce(z, z, 0.07)) < 1e-3
    assert float(info_nce(z, z.roll(1, 0), 0.07)) > 5


def test_masked_mse_ignores_missing_targets():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[2.0, float("nan")], [3.0, 6.0]])
    assert float(masked_mse(pred, target)) == pytest.approx((1 + 0 + 4) / 3)
    assert float(masked_mse(pred, torch.full_like(pred, float("nan")))) == 0.0


def test_view_without_noise_is_a_symmetry(examples64):
    example = examples64["resnet"]
    graph = Featurizer()(ws.to_graph(example.module, example.inputs))
    view = make_view(graph, torch.Generator().manual_seed(0), noise=0.0, edge_dropout=0.0)
    assert not torch.equal(view.node_features, graph.node_features)  # nodes did move
    torch.manual_seed(0)
    encoder = ws.create_encoder("gnn").double().eval()
    with torch.no_grad():
        a = encoder(ws.GraphBatch.from_graphs([graph]))
        b = encoder(ws.GraphBatch.from_graphs([view]))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_view_noise_and_edge_dropout(examples64):
    example = examples64["mlp"]
    graph = Featurizer()(ws.to_graph(example.module, example.inputs))
    view = make_view(graph, torch.Generator().manual_seed(0), noise=0.1, edge_dropout=0.25)
    dropped = 1 - view.num_edges / graph.num_edges
    assert 0.2 < dropped < 0.3
    assert int(view.block_ptr[-1]) == view.num_edges
