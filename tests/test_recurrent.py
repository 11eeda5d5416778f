"""PackedLSTM runs at padded speed but must equal a packed nn.LSTM exactly: padding never enters the recurrence."""
import pytest
import torch

from ser_models.blocks import PackedLSTM, reverse_within_lengths


def test_reverse_within_lengths_keeps_padding_in_place():
    x = torch.arange(8.0).view(2, 4, 1)
    reversed_ = reverse_within_lengths(x, torch.tensor([4, 2]))
    assert reversed_[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert torch.equal(reverse_within_lengths(reversed_, torch.tensor([4, 2])), x)


@pytest.mark.parametrize("layers, bidirectional", [(1, True), (1, False), (2, True)])
def test_outputs_and_gradients_equal_the_packed_lstm(layers, bidirectional):
    torch.manual_seed(0)
    lstm = PackedLSTM(12, 16, num_layers=layers, bidirectional=bidirectional)
    x = torch.randn(5, 30, 12, requires_grad=True)
    lengths = torch.tensor([30, 12, 1, 25, 0])  # 0 is clamped to 1, as packing requires
    fast, fast_final = lstm(x, lengths)
    packed, packed_final = lstm._packed(x, lengths)
    assert torch.allclose(fast, packed, atol=1e-5, rtol=0)
    assert torch.allclose(fast_final, packed_final, atol=1e-5, rtol=0)
    assert (fast[1, 12:] == 0).all() and (fast[2, 1:] == 0).all()
    wrt = [x, *lstm.parameters()]
    fast_grads = torch.autograd.grad(fast.square().sum() + fast_final.sum(), wrt)
    packed_grads = torch.autograd.grad(packed.square().sum() + packed_final.sum(), wrt)
    for fast_grad, packed_grad in zip(fast_grads, packed_grads):
        assert torch.allclose(fast_grad, packed_grad, atol=1e-5, rtol=1e-5)


def test_padding_a_batch_further_changes_nothing():
    torch.manual_seed(1)
    lstm = PackedLSTM(8, 8).eval()
    x, lengths = torch.randn(3, 10, 8), torch.tensor([10, 4, 7])
    longer = torch.cat([x, torch.randn(3, 6, 8)], dim=1)  # garbage, not zeros, in the padding
    short_out, short_final = lstm(x, lengths)
    long_out, long_final = lstm(longer, lengths)
    assert torch.allclose(short_out, long_out[:, :10], atol=1e-6)
    assert torch.allclose(short_final, long_final, atol=1e-6)


def test_state_dict_is_the_plain_lstm_one():
    lstm = PackedLSTM(4, 6)
    assert sorted(lstm.state_dict()) == sorted(f"lstm.{k}" for k in torch.nn.LSTM(4, 6, bidirectional=True)
                                                .state_dict())
