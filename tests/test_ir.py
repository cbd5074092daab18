"""The IR verifier and topological sort on graphs built by hand."""

import numpy as np
import pytest

from sporeling.errors import GraphError
from sporeling.ir import Graph, Node, ValueInfo, toposort, verify


def graph(nodes, inputs=("x",), outputs=("y",), inits=None):
    return Graph(nodes=nodes, inputs=[ValueInfo(i) for i in inputs], outputs=[ValueInfo(o) for o in outputs],
                 initializers=inits or {})


def test_valid_graph_passes():
    verify(graph([Node("Relu", ["x"], ["a"]), Node("Add", ["a", "w"], ["y"])], inits={"w": np.ones(1)}))


def test_reading_an_undefined_name_is_reported():
    with pytest.raises(GraphError, match="reads 'nope'"):
        verify(graph([Node("Relu", ["nope"], ["y"])]))


def test_out_of_order_nodes_are_reported_then_sorted():
    g = graph([Node("Relu", ["a"], ["y"], name="second"), Node("Neg", ["x"], ["a"], name="first")])
    with pytest.raises(GraphError, match="second"):
        verify(g)
    toposort(g)
    assert [n.name for n in g.nodes] == ["first", "second"]
    verify(g)


def test_a_cycle_is_reported():
    g = graph([Node("Add", ["x", "b"], ["a"]), Node("Relu", ["a"], ["b"]), Node("Neg", ["b"], ["y"])])
    with pytest.raises(GraphError, match="cycle"):
        toposort(g)


def test_a_name_defined_twice_is_reported():
    with pytest.raises(GraphError, match="already defined"):
        verify(graph([Node("Relu", ["x"], ["y"]), Node("Neg", ["x"], ["y"])]))


def test_an_output_never_produced_is_reported():
    with pytest.raises(GraphError, match="never produced"):
        verify(graph([Node("Relu", ["x"], ["a"])], outputs=("y",)))


def test_subgraphs_see_the_outer_scope_but_not_later_names():
    body = Graph(nodes=[Node("Add", ["x", "late"], ["t"])], outputs=[ValueInfo("t")], name="body")
    g = graph([Node("If", ["x"], ["a"], {"then_branch": body, "else_branch": body}),
               Node("Relu", ["x"], ["late"]), Node("Neg", ["a"], ["y"])])
    with pytest.raises(GraphError, match="late"):
        verify(g)
    assert body.outer_names() == {"x", "late"}


def test_op_counts_include_subgraphs_and_printing_shows_nodes():
    body = Graph(nodes=[Node("Relu", ["x"], ["t"])], outputs=[ValueInfo("t")])
    g = graph([Node("If", ["x"], ["y"], {"then_branch": body, "else_branch": body})])
    assert g.op_counts() == {"Relu": 2, "If": 1}
    assert "y = If(x)" in str(g)
