"""The layer stack: one list or several, numbered as one; the manifest form; names that do not fit are refused."""

import pytest

from hf_diffusionblocks.pretrained.layer_stack import LayerStack

FLUX = LayerStack((("transformer_blocks", 2), ("single_transformer_blocks", 3)))


def test_names_and_global_indices_map_both_ways():
    assert FLUX.num_layers == 5 and FLUX.names == ("transformer_blocks", "single_transformer_blocks")
    assert [FLUX.locate(i) for i in (0, 1, 2, 4)] == [("transformer_blocks", 0), ("transformer_blocks", 1),
                                                      ("single_transformer_blocks", 0), ("single_transformer_blocks", 2)]
    assert FLUX.source_name(3, "attn.to_q.weight") == "single_transformer_blocks.1.attn.to_q.weight"
    assert FLUX.split_source_name("single_transformer_blocks.1.attn.to_q.weight") == (3, "attn.to_q.weight")
    assert FLUX.index_of("transformer_blocks.1.norm1.linear.bias") == 1
    assert FLUX.index_of("proj_out.weight") is None and FLUX.index_of("transformer_blocks.x.weight") is None
    with pytest.raises(ValueError, match="beyond the 2 layers of 'transformer_blocks'"):
        FLUX.index_of("transformer_blocks.2.weight")
    # a block from layer 1 to 3 straddles the lists
    assert FLUX.split_block([1, 2, 3], ["a", "b", "c"]) == {"transformer_blocks": ["a"], "single_transformer_blocks": ["b", "c"]}
    assert FLUX.split_block([3, 4], ["d", "e"]) == {"transformer_blocks": [], "single_transformer_blocks": ["d", "e"]}


def test_the_manifest_form_keeps_single_list_conversions_as_they_were():
    single = LayerStack.from_manifest("transformer_blocks", 28)
    assert single.to_manifest() == "transformer_blocks" and single.describe() == "transformer_blocks"
    assert LayerStack.from_manifest(FLUX.to_manifest(), 5) == FLUX
    assert FLUX.describe() == "transformer_blocks (2) + single_transformer_blocks (3)"
    with pytest.raises(ValueError, match="holds 5 layers, but the blocks hold 6"):
        LayerStack.from_manifest(FLUX.to_manifest(), 6)
    for bad, message in [([["transformer_blocks", 2], ["transformer_blocks", 3]], "distinct module names"),
                         ([["../x", 5]], "distinct module names"), ([["a", -1], ["b", 6]], "integers >= 0"),
                         ([["a", True], ["b", 4]], "integers >= 0"), ({"a": 5}, r"\[\[name, count\], ...\]")]:
        with pytest.raises(ValueError, match=message):
            LayerStack.from_manifest(bad, 5)
