"""Tests for the model zoo in tests/models.py."""

import pytest
import torch
import torch.fx

try:
    from tests.models import ALL_MODELS, DEEP_MODELS, IMAGENET_MODELS, MODELS, ModelCase
except ModuleNotFoundError:  # tests/ itself on sys.path (pytest rootdir-less import)
    from models import ALL_MODELS, DEEP_MODELS, IMAGENET_MODELS, MODELS, ModelCase

NUM_CLASSES = 10
# The compiler's host allow-list, by module type and by call_function / call_method name.
ALLOWED_MODULES = {
    "Conv1d",
    "Conv2d",
    "Linear",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "GELU",
    "SiLU",
    "Hardswish",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "Flatten",
    "Dropout",
    "Identity",
}
ALLOWED_CALLS = {
    "conv1d",
    "conv2d",
    "linear",
    "matmul",
    "relu",
    "relu6",
    "leaky_relu",
    "gelu",
    "silu",
    "hardswish",
    "sigmoid",
    "tanh",
    "softmax",
    "clamp",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "pow",
    "mean",
    "sum",
    "cat",
    "stack",
    "chunk",
    "split",
    "getitem",
    "pad",
    "flatten",
    "reshape",
    "view",
    "permute",
    "transpose",
    "contiguous",
    "unsqueeze",
    "squeeze",
    "size",
    "getattr",
    "dropout",
}
IMAGENET_PARAMS = {
    "resnet18_imagenet": 11_689_512,
    "resnet50_imagenet": 25_557_032,
    "vgg16_imagenet": 138_357_544,
}


@pytest.fixture(scope="module", params=sorted(MODELS), ids=str)
def case_and_model(request):
    case = MODELS[request.param]
    return case, case.build(seed=0)


def test_registry_shapes():
    assert set(DEEP_MODELS) <= set(ALL_MODELS)
    expected = {
        "mlp",
        "lenet",
        "vgg_small",
        "resnet20",
        "resnet56",
        "mobilenetv2_small",
        "densenet_small",
        "se_net",
        "shufflenet_small",
        "conv1d_net",
        "transformer_block",
        "digits_cnn",
        "vgg_digits",
        "resnet_digits",
        "functional_net",
    }
    assert set(MODELS) | set(DEEP_MODELS) == expected
    assert set(IMAGENET_MODELS) == set(IMAGENET_PARAMS)
    for name, case in MODELS.items():
        assert isinstance(case, ModelCase) and case.name == name and case.input_shape[0] == 2
    for case in IMAGENET_MODELS.values():
        assert case.input_shape == (1, 3, 224, 224)


def test_forward_shape_and_finite(case_and_model):
    case, model = case_and_model
    assert not model.training
    with torch.no_grad():
        y = model(case.example_input(seed=1))
    assert y.shape == (case.input_shape[0], NUM_CLASSES)
    assert torch.isfinite(y).all()
    assert y.abs().max() < 1e4  # well scaled (BN calibration keeps deep nets tame)


def check_ops_allowed(model):
    gm = torch.fx.symbolic_trace(model)
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            assert type(mod).__name__ in ALLOWED_MODULES, node.format_node()
            assert not getattr(mod, "inplace", False), node.format_node()
        elif node.op in ("call_function", "call_method"):
            name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
            assert name in ALLOWED_CALLS, node.format_node()
            assert not node.kwargs.get("inplace", False), node.format_node()


def check_batchnorm_nontrivial(model):
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert not torch.allclose(bn.bias, torch.zeros_like(bn.bias))


def test_batchnorm_nontrivial(case_and_model):
    check_batchnorm_nontrivial(case_and_model[1])


def test_only_allowed_ops(case_and_model):
    check_ops_allowed(case_and_model[1])


def test_symbolic_trace_matches(case_and_model):
    case, model = case_and_model
    traced = torch.fx.symbolic_trace(model)
    x = case.example_input(seed=2)
    with torch.no_grad():
        assert torch.allclose(traced(x), model(x), rtol=1e-5, atol=1e-6)


def test_deterministic_factory(case_and_model):
    case, model = case_and_model
    x = case.example_input(seed=3)
    with torch.no_grad():
        assert torch.equal(case.factory(seed=0)(x), model(x))
        assert not torch.equal(case.factory(seed=1)(x), model(x))


@pytest.mark.parametrize("name", sorted(IMAGENET_MODELS))
def test_imagenet_trace_and_params(name):
    model = IMAGENET_MODELS[name].build()
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == IMAGENET_PARAMS[name]
    check_ops_allowed(model)  # includes symbolic_trace
    check_batchnorm_nontrivial(model)
