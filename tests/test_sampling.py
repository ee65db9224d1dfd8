"""Sampling: official solver grids and loops, diffusers WanPipeline parity, seeds, batches, CFG
call counts, DMD, partial denoise, TI2V start frame, the A14B expert switch, interruption."""

import numpy as np
import pytest
import torch

from conftest import rel_err
from references import official_wan
from tiny_models.dit import TINY_T2V, TINY_TI2V, random_dit_state, tiny_dit
from wan_core import latent as latent_space
from wan_core.sampling.sampler import SamplerSettings, SamplingInterrupted, sample, seeded_noise
from wan_core.sampling.schedulers import make_schedule

LATENT = (1, 16, 3, 6, 10)


def _texts(seed=0, b=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 20, 4096, generator=g), torch.randn(b, 20, 4096, generator=g)


def _pad512(x):
    return torch.cat([x, x.new_zeros(x.shape[0], 512 - x.shape[1], x.shape[2])], dim=1)


class CallCounter:
    """Counts DiT passes (``predict``, what the sampler calls) and records their timesteps."""

    def __init__(self, model):
        self.calls, self.timesteps = 0, []
        inner = model.predict

        def forward(*args, **kwargs):
            self.calls += 1
            self.timesteps.append(args[1].clone())
            return inner(*args, **kwargs)

        model.predict = forward


# -- grids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps,shift", [(40, 12.0), (50, 5.0), (30, 8.0), (20, 3.0), (4, 5.0)])
def test_grids_equal_official(steps, shift):
    unipc, dpm = official_wan("utils.fm_solvers_unipc"), official_wan("utils.fm_solvers")
    ref = unipc.FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    ref.set_timesteps(steps, device="cpu", shift=shift)
    ours = make_schedule("unipc", steps, shift)
    assert torch.equal(ours.timesteps, ref.timesteps.float()) and torch.equal(ours.sigmas, ref.sigmas)
    d = dpm.FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    ts, _ = dpm.retrieve_timesteps(d, device="cpu", sigmas=dpm.get_sampling_sigmas(steps, shift))
    ours = make_schedule("dpm++", steps, shift)
    assert torch.equal(ours.timesteps, ts.float()) and torch.equal(ours.sigmas, d.sigmas)


def test_a14b_split_at_40_steps_shift_12():
    t = make_schedule("unipc", 40, 12.0).timesteps
    assert int((t >= 875).sum()) == 26 and int((t < 875).sum()) == 14
    assert t[:3].tolist() == [999, 997, 995] and t[-3:].tolist() == [492, 386, 235]


# -- loops against the official solvers ----------------------------------------------------------


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
@torch.no_grad()
def test_loop_matches_official_solver(solver):
    model = tiny_dit(TINY_T2V, seed=1)
    pos, neg = _texts()
    steps, shift, g = 8, 5.0, 5.0
    ours = sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(steps=steps, guidance=g, shift=shift,
                                                                        scheduler=solver, seed=3))
    # The official loop (text2video.py) driving the official scheduler with our DiT.
    if solver == "unipc":
        sched = official_wan("utils.fm_solvers_unipc").FlowUniPCMultistepScheduler(
            num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
        sched.set_timesteps(steps, device="cpu", shift=shift)
        timesteps = sched.timesteps
    else:
        dpm = official_wan("utils.fm_solvers")
        sched = dpm.FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
        timesteps, _ = dpm.retrieve_timesteps(sched, device="cpu", sigmas=dpm.get_sampling_sigmas(steps, shift))
    x = seeded_noise(LATENT, 3)
    for t in timesteps:
        tt = torch.stack([t]).float()
        cond = model(x, tt, pos)
        uncond = model(x, tt, neg)
        x = sched.step(uncond + g * (cond - uncond), t, x, return_dict=False)[0]
    assert rel_err(latent_space.normalize(ours), x) < 1e-5


# -- diffusers WanPipeline -------------------------------------------------------------------------


def _diffusers_transformer(sd, cfg):
    from diffusers import WanTransformer3DModel

    from wan_core.dit.keymap import official_to_diffusers

    m = WanTransformer3DModel(num_attention_heads=cfg.num_heads, attention_head_dim=128, in_channels=16,
                              out_channels=16, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True,
                              qk_norm="rms_norm_across_heads", eps=1e-6)
    m.load_state_dict({official_to_diffusers(k): v for k, v in sd.items()})
    return m.eval()


def _official_grid_unipc(shift):
    """diffusers' flow UniPC fed the official sigma grid through its ``sigmas=`` argument.

    diffusers 0.42 builds its flow grid from linspace(1, 1/1000) while the official solver uses
    linspace(0.999, 0); everything else (update rule, pipeline, CFG, expert switch) is compared as is.
    """
    import numpy as np
    from diffusers import UniPCMultistepScheduler

    class OfficialGridUniPC(UniPCMultistepScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
            base = np.linspace(float(np.float32(1.0 - 1.0 / 1000)), 0.0, num_inference_steps + 1)[:-1]
            super().set_timesteps(device=device, sigmas=base)

    return OfficialGridUniPC(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                             num_train_timesteps=1000)


def _pipeline(transformers, boundary=None, shift=5.0):
    from diffusers import AutoencoderKLWan, WanPipeline

    from tiny_models.vae import TINY21, random_vae_state
    from wan_core.vae.keymap import vae_key_pairs

    vae_sd = random_vae_state(TINY21, seed=5)
    dvae = AutoencoderKLWan(base_dim=TINY21.dim, z_dim=16)
    pairs = vae_key_pairs(TINY21)
    dvae.load_state_dict({pairs[k]: v for k, v in vae_sd.items()})
    sched = _official_grid_unipc(shift)
    kw = dict(transformer_2=transformers[1], boundary_ratio=boundary) if len(transformers) > 1 else {}
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=dvae.eval(), transformer=transformers[0],
                       scheduler=sched, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe, vae_sd


@torch.no_grad()
def test_full_pipeline_matches_diffusers():
    from tiny_models.vae import TINY21
    from wan_core.vae import WanVAE

    sd = random_dit_state(TINY_T2V, seed=2)
    ours_model = tiny_dit(TINY_T2V, seed=2)
    pipe, vae_sd = _pipeline([_diffusers_transformer(sd, TINY_T2V)])
    pos, neg = _texts(1)
    steps, g = 6, 5.0
    frames, height, width = 9, 6 * 8, 10 * 8
    noise = seeded_noise(LATENT, 11)
    ref_latent = pipe(prompt_embeds=_pad512(pos), negative_prompt_embeds=_pad512(neg), height=height, width=width,
                      num_frames=frames, num_inference_steps=steps, guidance_scale=g, latents=noise,
                      output_type="latent").frames
    ours = sample(ours_model, pos, neg, torch.zeros(LATENT),
                  SamplerSettings(steps=steps, guidance=g, shift=5.0, scheduler="unipc", seed=11))
    assert pipe.scheduler.timesteps.float().tolist() == make_schedule("unipc", steps, 5.0).timesteps.tolist()
    assert rel_err(latent_space.normalize(ours), ref_latent) < 1e-5
    # and the decoded video: diffusers' VAE decode vs ours on our latent
    ref_video = pipe(prompt_embeds=_pad512(pos), negative_prompt_embeds=_pad512(neg), height=height, width=width,
                     num_frames=frames, num_inference_steps=steps, guidance_scale=g, latents=noise,
                     output_type="pt").frames
    vae = WanVAE(TINY21)
    vae.load_state_dict(vae_sd)
    video = (vae.eval().decode(ours) + 1) / 2  # [B, 3, F, H, W] in 0..1
    assert rel_err(video.permute(0, 2, 1, 3, 4), ref_video) < 1e-4


@torch.no_grad()
def test_expert_switch_matches_diffusers_boundary_ratio():
    sd_high, sd_low = random_dit_state(TINY_T2V, seed=21), random_dit_state(TINY_T2V, seed=22)
    high, low = tiny_dit(TINY_T2V, seed=21), tiny_dit(TINY_T2V, seed=22)
    pipe, _ = _pipeline([_diffusers_transformer(sd_high, TINY_T2V), _diffusers_transformer(sd_low, TINY_T2V)],
                        boundary=0.875, shift=12.0)
    pos, neg = _texts(2)
    steps = 10
    noise = seeded_noise(LATENT, 4)
    ref = pipe(prompt_embeds=_pad512(pos), negative_prompt_embeds=_pad512(neg), height=48, width=80, num_frames=9,
               num_inference_steps=steps, guidance_scale=4.0, guidance_scale_2=3.0, latents=noise,
               output_type="latent").frames
    hc, lc = CallCounter(high), CallCounter(low)
    ours = sample(high, pos, neg, torch.zeros(LATENT), SamplerSettings(
        steps=steps, guidance=4.0, guidance_low=3.0, shift=12.0, scheduler="unipc", seed=4, boundary=0.875),
        model_low=low)
    assert rel_err(latent_space.normalize(ours), ref) < 1e-5
    sched = make_schedule("unipc", steps, 12.0)
    assert hc.calls == int((sched.timesteps >= 875).sum()) and lc.calls == int((sched.timesteps < 875).sum())
    assert hc.calls > 0 and lc.calls > 0


# -- behaviour --------------------------------------------------------------------------------------


@torch.no_grad()
def test_same_seed_bit_identical_and_seed_matters():
    model = tiny_dit(TINY_T2V, seed=1)
    pos, neg = _texts()
    s = SamplerSettings(steps=3, guidance=5.0, seed=42)
    a = sample(model, pos, neg, torch.zeros(LATENT), s)
    b = sample(model, pos, neg, torch.zeros(LATENT), s)
    assert torch.equal(a, b)
    c = sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(steps=3, guidance=5.0, seed=43))
    assert not torch.allclose(a, c)


@torch.no_grad()
def test_batch_element_equals_single_run():
    model = tiny_dit(TINY_T2V, seed=1)
    pos, neg = _texts(b=3)
    s = SamplerSettings(steps=3, guidance=5.0, seed=100)
    batch = sample(model, pos, neg, torch.zeros((3,) + LATENT[1:]), s)
    for i in range(3):
        single = sample(model, pos[i:i + 1], neg[i:i + 1], torch.zeros(LATENT),
                        SamplerSettings(steps=3, guidance=5.0, seed=100 + i))
        assert rel_err(batch[i:i + 1], single) < 1e-5


@torch.no_grad()
def test_guidance_one_skips_uncond_and_batched_equals_sequential():
    model = tiny_dit(TINY_T2V, seed=1)
    counter = CallCounter(model)
    pos, neg = _texts()
    sample(model, pos, None, torch.zeros(LATENT), SamplerSettings(steps=4, guidance=1.0))
    assert counter.calls == 4 and all(t.shape[0] == 1 for t in counter.timesteps)
    counter.calls = 0
    batched = sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(steps=4, guidance=6.0))
    assert counter.calls == 4  # cond and uncond in one forward of batch 2
    counter.calls = 0
    seq = sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(steps=4, guidance=6.0, batched_cfg=False))
    assert counter.calls == 8
    assert rel_err(batched, seq) < 1e-5


def fastvideo_dmd(model, text, shape, seed, timesteps=(1000, 757, 522)):
    """FastVideo 0.2.1's DMD stage for one video, transcribed from its code (FastVideo cannot be
    installed here: it pins torch 2.12, gradio, ray, flashinfer):

    - ``pipelines/stages/input_validation.py``: ``batch.generator = [torch.Generator("cpu").manual_seed(seed)]``;
      ``latent_preparation.py``: the initial latents are ``randn_tensor(shape, generator)`` from it;
    - ``pipelines/stages/denoising.py`` ``DmdDenoisingStage``: its own ``FlowMatchEulerDiscreteScheduler(shift=8.0)``;
      the model gets the integer timestep; ``pred_noise_to_pred_video`` (``models/utils.py``) takes the sigma of
      the table entry whose timestep is nearest and computes ``x - sigma * v`` in float64; before every step but
      the last, ``noise = torch.randn(latents.shape, generator=batch.generator[0])`` and the scheduler's
      ``add_noise`` gives ``(1 - sigma_next) * x0 + sigma_next * noise`` (same table lookup);
    - ``models/schedulers/scheduling_flow_match_euler_discrete.py`` ``__init__``: timesteps
      ``linspace(1, 1000, 1000, float32)[::-1]``, sigmas ``t / 1000`` shifted ``s' = 8 s / (1 + 7 s)``,
      table timesteps ``s' * 1000``.
    """
    table_t = torch.from_numpy(np.linspace(1, 1000, 1000, dtype=np.float32)[::-1].copy())
    sigmas = table_t / 1000
    sigmas = 8.0 * sigmas / (1 + 7.0 * sigmas)
    table_timesteps = sigmas * 1000

    def sigma_of(t):
        return sigmas[torch.argmin((table_timesteps - t).abs())]

    generator = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn(shape, generator=generator)
    for i, t in enumerate(timesteps):
        v = model(latents, torch.tensor([float(t)]), text)
        pred_video = (latents.double() - sigma_of(t).double() * v.double()).float()
        if i < len(timesteps) - 1:
            noise = torch.randn(shape, generator=generator)
            s = sigma_of(timesteps[i + 1])
            latents = (1 - s) * pred_video + s * noise
        else:
            latents = pred_video
    return latents


@torch.no_grad()
def test_dmd_matches_fastvideos_stage():
    model = tiny_dit(TINY_TI2V, seed=1)
    counter = CallCounter(model)
    pos, _ = _texts()
    shape = (1, 48, 3, 6, 10)
    out = sample(model, pos, None, torch.zeros(shape), SamplerSettings(scheduler="dmd", guidance=1.0, seed=9))
    assert counter.calls == 3
    assert [float(t.flatten()[0]) for t in counter.timesteps] == [1000.0, 757.0, 522.0]
    reference = fastvideo_dmd(model, pos, shape, seed=9)
    assert rel_err(latent_space.normalize(out), reference) < 1e-6
    # the sigmas are the table's (757 -> 0.7567567), not t / 1000
    assert make_schedule("dmd", 3, 5.0).sigmas[1].item() == pytest.approx(0.7567567, abs=1e-7)
    again = sample(model, pos, None, torch.zeros(shape), SamplerSettings(scheduler="dmd", guidance=1.0, seed=9))
    assert torch.equal(out, again)


@torch.no_grad()
def test_dmd_batch_item_is_its_own_seed():
    """Documented deviation: FastVideo re-noises every batch item from the first generator; ours draws
    item i from the generator seeded seed + i, so item i is the video that seed + i gives alone."""
    model = tiny_dit(TINY_TI2V, seed=1)
    pos, _ = _texts()
    shape = (1, 48, 2, 4, 6)
    both = sample(model, pos.expand(2, -1, -1), None, torch.zeros((2,) + shape[1:]),
                  SamplerSettings(scheduler="dmd", guidance=1.0, seed=9))
    for i in range(2):
        alone = sample(model, pos, None, torch.zeros(shape), SamplerSettings(scheduler="dmd", guidance=1.0, seed=9 + i))
        assert rel_err(both[i:i + 1], alone) < 1e-5


@torch.no_grad()
def test_partial_denoise_starts_from_the_latent():
    model = tiny_dit(TINY_T2V, seed=1)
    counter = CallCounter(model)
    pos, neg = _texts()
    init = torch.randn(LATENT, generator=torch.Generator().manual_seed(5)) * 2
    s = SamplerSettings(steps=5, guidance=1.0, denoise=0.5, seed=1)
    out = sample(model, pos, None, init, s)
    full = make_schedule("unipc", 10, 5.0)
    assert counter.calls == 5 and float(counter.timesteps[0][0]) == float(full.timesteps[5])
    out2 = sample(model, pos, None, init * 0.5, s)
    assert not torch.allclose(out, out2)  # the result depends on the given latent


@torch.no_grad()
def test_ti2v_start_frame_fixed_with_zero_timesteps():
    model = tiny_dit(TINY_TI2V, seed=1)
    counter = CallCounter(model)
    pos, neg = _texts()
    shape = (1, 48, 3, 6, 10)
    start = torch.randn(1, 48, 1, 6, 10)
    out = sample(model, pos, neg, torch.zeros(shape), SamplerSettings(steps=3, guidance=5.0), start_latent=start)
    assert torch.allclose(out[:, :, :1], start, atol=1e-5)
    t = counter.timesteps[0]
    assert t.shape == (2, 3 * 15) and (t[:, :15] == 0).all() and (t[:, 15:] > 900).all()


@torch.no_grad()
def test_callback_and_interrupt():
    model = tiny_dit(TINY_T2V, seed=1)
    pos, neg = _texts()
    seen = []
    sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(steps=3),
           callback=lambda i, n, x0: seen.append((i, n, tuple(x0.shape))))
    assert seen == [(1, 3, LATENT), (2, 3, LATENT), (3, 3, LATENT)]
    with pytest.raises(SamplingInterrupted, match="before step 2 of 3"):
        sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(steps=3), should_stop=lambda: len(seen) > 3,
               callback=lambda i, n, x0: seen.append(i))


def test_bad_settings_are_clear():
    model = tiny_dit(TINY_T2V, seed=1)
    pos, neg = _texts()
    with pytest.raises(ValueError, match="latent has 48 channels but the DiT .* takes 16.*VAE"):
        sample(model, pos, neg, torch.zeros(1, 48, 1, 2, 2), SamplerSettings(steps=1))
    with pytest.raises(ValueError, match="unknown scheduler 'ddim'"):
        sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(scheduler="ddim"))
    with pytest.raises(ValueError, match="denoise must be in"):
        sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(denoise=0.0))


@torch.no_grad()
def test_low_noise_expert_is_prepared_only_at_the_switch():
    """Nothing forces both A14B experts to be resident: the low-noise one is first touched at the switch."""
    high, low = tiny_dit(TINY_T2V, seed=21), tiny_dit(TINY_T2V, seed=22)
    hc = CallCounter(high)
    events = []
    pos, neg = _texts()
    sample(high, pos, neg, torch.zeros(LATENT), SamplerSettings(steps=10, guidance=4.0, guidance_low=3.0, shift=12.0),
           model_low=low, prepare_model=lambda m: events.append(("prepare", "high" if m is high else "low", hc.calls)))
    switch = int((make_schedule("unipc", 10, 12.0).timesteps >= 875).sum())
    assert events == [("prepare", "high", 0), ("prepare", "low", switch)]


@torch.no_grad()
def test_cached_text_kv_equals_per_step_projection():
    model = tiny_dit(TINY_T2V, seed=1)
    pos, neg = _texts()
    outs = [sample(model, pos, neg, torch.zeros(LATENT), SamplerSettings(steps=3, guidance=5.0, cache_text_kv=c,
                                                                         batched_cfg=bc))
            for c in (True, False) for bc in (True, False)]
    for o in outs[1:]:
        assert rel_err(o, outs[0]) < 1e-5
