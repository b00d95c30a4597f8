import pytest
import torch

import weightspace as ws
from weightspace.graph import EDGE_FEATURE_DIM


@pytest.fixture(scope="module")
def graphs(examples32):
    return [ws.to_graph(e.module, e.inputs) for e in examples32.values()]


def test_batch_concatenates_mixed_architectures(graphs):
    batch = ws.GraphBatch.from_graphs(graphs)
    assert batch.num_graphs == len(graphs)
    assert batch.num_nodes == sum(g.num_nodes for g in graphs)
    assert batch.edge_features.shape == (sum(g.num_edges for g in graphs), EDGE_FEATURE_DIM)
    for i, g in enumerate(graphs):
        nodes = batch.batch == i
        torch.testing.assert_close(batch.node_features[nodes], g.node_features)
        edges = batch.edge_batch == i
        torch.testing.assert_close(batch.edge_index[:, edges] - batch.ptr[i], g.edge_index)
        width = g.edge_features.shape[1]
        torch.testing.assert_close(batch.edge_features[edges, :width], g.edge_features)
        assert (batch.edge_features[edges, width:] == 0).all()


def test_dense_view_pads_and_masks(graphs):
    batch = ws.GraphBatch.from_graphs(graphs[:3])
    x, mask = batch.to_dense()
    sizes = [g.num_nodes for g in graphs[:3]]
    assert x.shape == (3, max(sizes), batch.node_features.shape[1])
    assert mask.sum(1).tolist() == sizes
    for i, g in enumerate(graphs[:3]):
        torch.testing.assert_close(x[i, : g.num_nodes], g.node_features)
        assert (x[i, g.num_nodes :] == 0).all()


def test_batch_to_dtype(graphs):
    batch = ws.GraphBatch.from_graphs(graphs[:2]).to(dtype=torch.float64)
    assert batch.node_features.dtype == torch.float64
    assert batch.edge_index.dtype == torch.int64


def test_empty_batch_is_an_error():
    with pytest.raises(ws.GraphError, match="at least one graph"):
        ws.GraphBatch.from_graphs([])


def test_malformed_graph_is_named(graphs):
    from dataclasses import replace

    bad = replace(graphs[0], edge_index=graphs[0].edge_index.to(torch.int32))
    with pytest.raises(ws.GraphError, match=r"graph 1: expected 'edge_index' to be an int64"):
        ws.GraphBatch.from_graphs([graphs[1], bad])
