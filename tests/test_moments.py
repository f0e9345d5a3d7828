"""The object-moment pixel encoder: colours found from data, moments that follow objects, and what
it reads of CartPole's state across the whole track."""

import numpy as np
import pytest
import torch
from vjepa_agent.envs.starts import default_start_ranges

from vjepa_agent import envs
from vjepa_agent.models.moments import MOMENTS, ObjectMoments, ink_directions

RED, BLUE, WHITE = (220, 30, 30), (30, 60, 200), (255, 255, 255)


def scene(objects, t=2, h=32, w=48) -> torch.Tensor:
    """uint8 frames (1, 3, T, H, W): white, with (colour, top, left, height, width) boxes."""
    img = torch.tensor(WHITE, dtype=torch.uint8).view(3, 1, 1, 1).repeat(1, t, h, w)
    for colour, top, left, hh, ww in objects:
        img[:, :, top : top + hh, left : left + ww] = torch.tensor(colour).view(3, 1, 1, 1)
    return img[None]


def moment(enc: ObjectMoments, raw: torch.Tensor, colour: int, frame: int, name: str) -> float:
    per = raw.view(enc.k, enc.frames, len(MOMENTS))
    return float(per[colour, frame, MOMENTS.index(name)])


def fitted_two_colour_encoder() -> tuple[ObjectMoments, int, int]:
    frames = torch.cat(
        [scene([(RED, 4 + i % 7, 3 + i, 6, 4), (BLUE, 20, 40 - i, 5, 5)]) for i in range(20)]
    )
    enc = ObjectMoments((3, 2, 32, 48))
    found = enc.fit(frames)
    assert found["background"] == list(map(float, WHITE))
    d = torch.tensor(found["ink_directions"])
    ink = lambda c: (torch.tensor(WHITE) - torch.tensor(c)).float()  # noqa: E731
    red = int((d @ (ink(RED) / ink(RED).norm())).argmax())
    blue = int((d @ (ink(BLUE) / ink(BLUE).norm())).argmax())
    assert red != blue
    return enc, red, blue


def test_fit_finds_background_and_object_colours():
    enc, red, blue = fitted_two_colour_encoder()
    d = torch.linalg.pinv(enc.unmix).T  # back to the directions (K, C)
    for k, colour in ((red, RED), (blue, BLUE)):
        ink = (torch.tensor(WHITE) - torch.tensor(colour)).float()
        assert torch.dot(d[k] / d[k].norm(), ink / ink.norm()) > 0.999


def test_centroid_follows_an_object_and_spread_does_not_change():
    enc, red, blue = fitted_two_colour_encoder()
    xs = []
    for left in (2, 10, 20, 30):
        raw = enc.raw(scene([(RED, 5, left, 6, 4), (BLUE, 20, 5, 5, 5)]))[0]
        xs.append(moment(enc, raw, red, 0, "x"))
        # the blue box did not move, and the red box's shape is the same wherever it is
        assert moment(enc, raw, blue, 0, "x") == pytest.approx(float(enc.xs[5:10].mean()), abs=1e-4)
        assert moment(enc, raw, red, 0, "xx") == pytest.approx(
            float(enc.xs[0:4].var(unbiased=False)), abs=1e-5
        )
    steps = np.diff(xs)
    assert np.allclose(steps / np.array([8, 10, 10]), steps[0] / 8, rtol=1e-3)  # linear in position


def test_orientation_moment_has_the_sign_of_the_tilt():
    enc, red, _ = fitted_two_colour_encoder()
    diag = [(RED, 4 + i, 10 + i, 1, 1) for i in range(12)]  # down-right in image coordinates
    anti = [(RED, 4 + i, 30 - i, 1, 1) for i in range(12)]
    xy = lambda objs: moment(enc, enc.raw(scene(objs))[0], red, 1, "xy")  # noqa: E731
    assert xy(diag) > 0 > xy(anti)


def test_ink_directions_of_blends_stay_on_the_colour():
    pure = (torch.tensor(WHITE) - torch.tensor(RED)).float() / 255.0
    blends = torch.cat([pure[None] * a for a in torch.linspace(0.2, 1.0, 50)])
    d = ink_directions(blends, 1)
    assert torch.allclose(d[0], pure / pure.norm(), atol=1e-5)


@pytest.mark.slow
def test_cartpole_pole_angle_is_read_everywhere_on_the_track(tmp_path):
    """Random-policy CartPole frames with the cart started anywhere in +-1.5 m: a linear readout
    of the moments gives the pole angle as well far from the centre as near it."""
    data = envs.collect_rollouts(
        "CartPole-v1",
        1500,
        obs="pixels",
        frame_stack=4,
        num_envs=4,
        seed=0,
        progress=False,
        start_ranges=default_start_ranges("CartPole-v1"),
    )
    enc = ObjectMoments(tuple(data["pixels"].shape[1:]))
    enc.fit(data["pixels"])
    z = enc(data["pixels"])
    state = data["observation"].float()
    x = torch.cat([z, torch.ones(len(z), 1)], 1)
    train = torch.arange(len(z)) % 5 != 0
    w = torch.linalg.lstsq(x[train], state[train]).solution
    err = (x[~train] @ w - state[~train])[:, 2].abs()  # pole angle (rad)
    far = state[~train][:, 0].abs() > 0.6
    near = state[~train][:, 0].abs() < 0.3
    assert far.sum() > 30 and near.sum() > 30
    rms_near, rms_far = err[near].pow(2).mean().sqrt(), err[far].pow(2).mean().sqrt()
    assert rms_near < 0.01 and rms_far < 0.01, (rms_near, rms_far)  # the angle's std is ~0.09
