"""The organism's scene generator, tokenizer/processor and training batches (no checkpoint needed)."""

import numpy as np
import pytest
import torch

from vasink.organism import build, data, scenes
from vasink.organism.pretrain import patch_labels


def _fingerprint(scene):
    return (np.asarray(scene.image).tobytes(), [(o.shape, o.color, o.box) for o in scene.objects],
            scene.questions)


def test_sample_is_deterministic_per_seed():
    a = scenes.sample("train", 5, seed=3)
    b = scenes.sample("train", 5, seed=3)
    c = scenes.sample("train", 5, seed=4)
    assert [_fingerprint(s) for s in a] == [_fingerprint(s) for s in b]
    assert [_fingerprint(s) for s in a] != [_fingerprint(s) for s in c]


def test_splits_never_share_scenes():
    images = {split: {np.asarray(s.image).tobytes() for s in scenes.sample(split, 50, seed=0)}
              for split in scenes.SPLIT_IDS}
    assert not images["train"] & images["validation"]
    assert not images["train"] & images["test"]
    assert not images["validation"] & images["test"]


@pytest.mark.parametrize("split,n", [("dev", 3), ("TEST", 3), ("test", 0), ("test", -2)])
def test_bad_input_is_a_clear_error(split, n):
    with pytest.raises(ValueError, match="split|positive"):
        scenes.sample(split, n, seed=0)


def test_scene_contents_are_consistent():
    for scene in scenes.sample("test", 40, seed=1):
        assert scene.image.size == (scenes.IMAGE_SIZE, scenes.IMAGE_SIZE) and scene.image.mode == "RGB"
        assert 1 <= len(scene.objects) <= 4
        present = {o.shape for o in scene.objects}
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= scenes.IMAGE_SIZE and 0 <= y0 < y1 <= scenes.IMAGE_SIZE
            assert scene.object_mask[y0:y1, x0:x1].any()  # the object was drawn inside its box
        families = {f for _, _, f in scene.questions}
        assert {"existence-random", "existence-popular", "existence-adversarial", "counting",
                "caption"} <= families
        for question, answer, family in scene.questions:
            assert family in scenes.FAMILIES
            if family.startswith("existence"):
                shape = question.split()[3]
                assert answer == ("yes" if shape in present else "no")
            elif family == "counting":
                assert answer == scenes.NUMBER_WORDS[len(scene.objects)]
            elif family == "attribute":
                shape = question.split()[4]
                assert [o.color for o in scene.objects if o.shape == shape] == [answer]
            elif family == "caption":
                assert sorted(scenes.caption_objects(answer)) == sorted(o.shape for o in scene.objects)


def test_pope_negatives_follow_their_strategy():
    for scene in scenes.sample("test", 40, seed=2):
        present = {o.shape for o in scene.objects}
        negatives = {f: q.split()[3] for q, a, f in scene.questions if a == "no" and f.startswith("existence")}
        absent = [s for s in scenes.SHAPES if s not in present]
        assert negatives["existence-popular"] == absent[0]
        partners = {scenes.PARTNERS[s] for s in present} & set(absent)
        if partners:
            assert negatives["existence-adversarial"] in partners


@pytest.fixture(scope="module")
def processor():
    """The organism's processor: SmolLM2's tokenizer (converted once into the cache) + <image>."""
    from vasink.organism import language_model

    _, tokenizer = language_model.load()
    return build.make_processor(tokenizer)


def test_tokenizer_round_trips_every_question(processor):
    tok = processor.tokenizer
    for scene in scenes.sample("validation", 20, seed=0):
        for question, answer, _ in scene.questions:
            ids = tok(question, add_special_tokens=False)["input_ids"]
            assert tok.decode(ids) == question
            assert tok.decode(tok(answer, add_special_tokens=False)["input_ids"]) == answer


def test_processor_saves_and_loads_offline(tmp_path, processor):
    from transformers import AutoProcessor

    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    scene = scenes.sample("test", 1, seed=0)[0]
    from vasink.organism import build_inputs

    inputs = build_inputs(reloaded, scene.image, "what color is the circle ?")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(reloaded.tokenizer.convert_tokens_to_ids(build.IMAGE)) == build.NUM_IMAGE_TOKENS
    assert ids[0] == reloaded.tokenizer.convert_tokens_to_ids("<|im_start|>")  # the BOS-like first token
    text = reloaded.tokenizer.decode(ids[ids.index(build_image_id(reloaded)) + build.NUM_IMAGE_TOKENS:])
    assert text == "\nwhat color is the circle ?<|im_end|>\n<|im_start|>assistant\n"
    assert inputs["pixel_values"].shape == (1, 3, scenes.IMAGE_SIZE, scenes.IMAGE_SIZE)


def build_image_id(processor) -> int:
    return processor.tokenizer.convert_tokens_to_ids(build.IMAGE)


def test_build_inputs_left_pads_a_batch(processor):
    from vasink.organism import build_inputs

    images = [s.image for s in scenes.sample("test", 2, seed=0)]
    inputs = build_inputs(processor, images, ["describe the image .", "is there a ring in the image ?"])
    assert inputs["input_ids"].shape[0] == 2
    assert inputs["attention_mask"][0, 0] == 0 and inputs["attention_mask"][1, 0] == 1  # short one padded left
    assert (inputs["attention_mask"][:, -1] == 1).all()
    with pytest.raises(ValueError):
        build_inputs(processor, images, ["describe the image ."])


def test_training_ids_match_the_processor(processor):
    """data.Encoder builds training sequences without the processor; they must be the same tokens and pixels,
    and only the answers (with their closing <|im_end|>) are trained."""
    encoder = data.Encoder(processor.tokenizer)
    scene = scenes.sample("train", 1, seed=5)[0]
    turns = [(q, a) for q, a, _ in scene.questions[:2]]
    messages = []
    for k, (q, a) in enumerate(turns):
        content = ([{"type": "image"}] if k == 0 else []) + [{"type": "text", "text": q}]
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": a}]
    text = processor.apply_chat_template(messages, tokenize=False)
    expected = processor(images=scene.image, text=text, return_tensors="pt")
    ids, trained = encoder.dialogue(turns)
    assert ids == expected["input_ids"][0].tolist()
    answers = processor.tokenizer.decode([t for t, keep in zip(ids, trained) if keep])
    assert answers == "".join(f"{a}<|im_end|>" for _, a in turns)
    assert torch.allclose(data.pixels([scene.image]), expected["pixel_values"], atol=1e-5)


def test_batch_labels_keep_just_the_answers(processor):
    encoder = data.Encoder(processor.tokenizer)
    batch = encoder.batch(np.random.default_rng(0), scenes.sample("train", 3, seed=0), max_turns=3)
    image_id = build_image_id(processor)
    for row in range(3):
        kept = [t for t, label in zip(batch["input_ids"][row].tolist(), batch["labels"][row].tolist())
                if label != data.IGNORE]
        assert kept and kept[-1] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert image_id not in kept
        assert "user" not in processor.tokenizer.decode(kept)
    assert (batch["labels"][batch["attention_mask"] == 0] == data.IGNORE).all()


def test_dialogues_draw_families_by_weight_and_put_the_caption_last(processor):
    from collections import Counter

    encoder = data.Encoder(processor.tokenizer)
    drawn = {}
    for weights in (None, {"attribute": 4.0}):
        seen = Counter()
        rng = np.random.default_rng(1)
        for _ in range(20):
            batch_scenes = [scenes.make_scene(rng) for _ in range(8)]
            batch = encoder.batch(rng, batch_scenes, max_turns=3, weights=weights, caption_last=True)
            for row, scene in enumerate(batch_scenes):
                text = processor.tokenizer.decode(batch["input_ids"][row][batch["attention_mask"][row] == 1])
                asked = [q for q in scene.questions if q[0] in text]
                seen.update(q[2] for q in asked)
                if any(q[2] == "caption" for q in asked):  # nothing is asked after the caption
                    assert text.rstrip().endswith(scenes.caption(scene) + "<|im_end|>")
        drawn[weights is None] = seen["attribute"] / sum(seen.values())
    # a scene has about ten questions, one of them attribute: weight 4 draws it about three times as often
    assert drawn[True] < 0.13 and drawn[False] > 2 * drawn[True]


def test_the_unweighted_draw_is_the_earlier_recipes(processor):
    """Without weights the turns are drawn as the runs before family_weights drew them (a permutation, then how
    many), so their recorded recipes reproduce them; the caption is not moved unless asked."""
    encoder = data.Encoder(processor.tokenizer)
    batch_scenes = scenes.sample("train", 6, seed=3)
    got = encoder.batch(np.random.default_rng(7), batch_scenes, max_turns=3)
    rng = np.random.default_rng(7)
    for row, scene in enumerate(batch_scenes):
        order = rng.permutation(len(scene.questions))
        turns = [scene.questions[i][:2] for i in order[:int(rng.integers(1, 4))]]
        ids = encoder.dialogue(turns)[0]
        assert got["input_ids"][row, :len(ids)].tolist() == ids


def test_visual_sinks_are_declared_only_when_most_layers_meet_the_papers_criteria():
    from vasink.organism.measure import has_visual_sinks

    def layers(images, share, first=0, n=30):
        return {"layers": [{"layer": l, "images_with_visual_sink": images if l >= first else 0.0,
                            "visual_sink_fraction": share if l >= first else 0.0} for l in range(n)]}

    assert has_visual_sinks(layers(0.9, 0.05))
    assert not has_visual_sinks(layers(0.9, 0.004))   # too few sink tokens
    assert not has_visual_sinks(layers(0.9, 0.30))    # too many: not a sink, a shift
    assert not has_visual_sinks(layers(0.4, 0.05))    # in a minority of images
    assert not has_visual_sinks(layers(0.9, 0.05, first=17))  # layers 17-29: 13 of the 28 searched
    assert has_visual_sinks(layers(0.9, 0.05, first=15))      # layers 15-29: 15 of 28


def test_a_share_of_dialogues_shows_the_caption_before_the_first_question(processor):
    encoder = data.Encoder(processor.tokenizer)
    batch_scenes = scenes.sample("train", 8, seed=5)
    told = encoder.batch(np.random.default_rng(2), batch_scenes, max_turns=3, context=1.0, patch_labels=True)
    image_id = build_image_id(processor)
    for row, scene in enumerate(batch_scenes):
        ids = [t for t in told["input_ids"][row][told["attention_mask"][row] == 1].tolist() if t != image_id]
        text = processor.tokenizer.decode(ids)
        assert text.startswith(f"<|im_start|>user\n\nThe image shows {scenes.caption(scene)}\n")
        assert scenes.CAPTION_QUESTION not in text  # the caption is given, so it is not asked
        kept = [t for t, label in zip(told["input_ids"][row].tolist(), told["labels"][row].tolist())
                if label != data.IGNORE]
        assert "The image shows" not in processor.tokenizer.decode(kept)  # no loss on the told caption
        shape, colour, centre = patch_labels(scene)
        assert told["patch_labels"][row].T.tolist() == [shape.tolist(), colour.tolist(), centre.tolist()]
    # context 0 draws nothing more: the batch is the one without the option
    plain = encoder.batch(np.random.default_rng(2), batch_scenes, max_turns=3)
    zero = encoder.batch(np.random.default_rng(2), batch_scenes, max_turns=3, context=0.0)
    assert torch.equal(plain["input_ids"], zero["input_ids"]) and "patch_labels" not in zero
    half = encoder.batch(np.random.default_rng(2), scenes.sample("train", 64, seed=5), max_turns=3, context=0.5)
    shown = sum("The image shows" in processor.tokenizer.decode(row) for row in half["input_ids"])
    assert 16 <= shown <= 48
