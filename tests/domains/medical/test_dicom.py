from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from domainvlm.domains.medical.dicom import (
    SAFE_TAGS,
    WINDOW_PRESETS,
    DicomReadError,
    ImageReadError,
    apply_window,
    decode_throughput,
    image_reader,
    read_dicom,
)
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

# Ask for one bundled file by exact name: get_testdata_files("*.dcm") would try to download.
BUNDLED = Path(get_testdata_file("CT_small.dcm", download=False)).parent
BUNDLED_FILES = sorted(path.name for path in BUNDLED.glob("*.dcm"))
BROKEN = {
    "JPEG-lossy.dcm": "cannot decode JPEG Extended",
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot decode JPEG 2000",
    "MR_truncated.dcm": "truncated pixel data: 8130 of 8192 bytes",
    "badVR.dcm": "invalid Number of Frames '1A'",
    "meta_missing_tsyntax.dcm": "missing required image attribute(s): Rows, Columns",
    "nested_priv_SQ.dcm": "missing required image attribute(s): Rows, Columns",
    "no_meta.dcm": "not a DICOM file",
    "rtplan_truncated.dcm": "truncated file: it ends inside element",
}
FAKE_PHI = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "PHI-98765",
    "PatientBirthDate": "19710203",
    "OtherPatientIDs": "OTHER-55501",
    "PatientAddress": "12 Secret Lane",
}


def bundled(name: str) -> Path:
    return BUNDLED / name


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    **tags: object,
) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    for keyword, value in {**FAKE_PHI, **tags}.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def assert_no_phi(*texts: str) -> None:
    for text in texts:
        for value in FAKE_PHI.values():
            assert value not in text


@pytest.mark.parametrize("name", BUNDLED_FILES)
def test_every_bundled_file_decodes_or_fails_clearly(name: str) -> None:
    path = bundled(name)
    if name in BROKEN:
        with pytest.raises(
            DicomReadError, match=BROKEN[name].replace("(", r"\(").replace(")", r"\)")
        ):
            read_dicom(path)
        return
    ds = pydicom.dcmread(path, force=True)
    if "PixelData" not in ds:
        with pytest.raises(DicomReadError, match="no Pixel Data element") as error:
            read_dicom(path)
        assert str(path) in str(error.value)
        return
    image = read_dicom(path)
    frames = int(ds.get("NumberOfFrames") or 1)
    shape = (ds.Rows, ds.Columns)
    shape = ((frames,) if frames > 1 else ()) + shape
    colour = ds.SamplesPerPixel == 3 or ds.PhotometricInterpretation == "PALETTE COLOR"
    assert image.pixels.shape == shape + ((3,) if colour else ())
    assert image.frames == frames
    assert image.pixels.dtype == np.float32
    assert np.isfinite(image.pixels).all()
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    assert image.meta["TransferSyntaxUID"] == str(ds.file_meta.TransferSyntaxUID)


def test_bundled_files_cover_the_transfer_syntaxes() -> None:
    decoded = set()
    for name in BUNDLED_FILES:
        if name not in BROKEN and "PixelData" in pydicom.dcmread(bundled(name), force=True):
            decoded.add(read_dicom(bundled(name), frame=0).meta["TransferSyntax"])
    expected = {
        "Explicit VR Little Endian",
        "Implicit VR Little Endian",
        "Explicit VR Big Endian",
        "Deflated Explicit VR Little Endian",
        "RLE Lossless",
        "JPEG Baseline (Process 1)",
        "JPEG Extended (Process 2 and 4)",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "JPEG-LS Lossless Image Compression",
        "JPEG-LS Lossy (Near-Lossless) Image Compression",
        "JPEG 2000 Image Compression (Lossless Only)",
        "JPEG 2000 Image Compression",
    }
    assert expected <= decoded


def test_ct_rescale_matches_hand_computation() -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    stored = np.frombuffer(ds.PixelData, dtype="<i2").reshape(128, 128).astype(np.float64)
    hounsfield = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) == -1024.0
    image = read_dicom(bundled("CT_small.dcm"), window=None)
    np.testing.assert_array_equal(image.pixels, hounsfield.astype(np.float32))
    assert image.pixels[64, 64] == stored[64, 64] - 1024

    lung = read_dicom(bundled("CT_small.dcm"), window="lung").pixels
    expected = np.clip((hounsfield - (-600 - 0.5)) / (1500 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(lung, expected, atol=1e-6)

    auto = read_dicom(bundled("CT_small.dcm"))
    low, high = np.percentile(hounsfield, [0.5, 99.5])
    assert auto.meta["WindowSource"] == "percentile"
    assert auto.meta["WindowCenterUsed"] == pytest.approx((low + high) / 2)
    np.testing.assert_allclose(
        auto.pixels, np.clip((hounsfield - low) / (high - low), 0, 1), atol=1e-6
    )


def test_file_window_is_used_by_default() -> None:
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    stored = np.frombuffer(ds.PixelData, dtype="<i2").reshape(64, 64).astype(np.float64)
    image = read_dicom(bundled("MR_small.dcm"))
    assert image.meta["WindowSource"] == "file"
    assert (image.meta["WindowCenterUsed"], image.meta["WindowWidthUsed"]) == (600.0, 1600.0)
    expected = np.clip((stored - 599.5) / 1599 + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    as_uint8 = read_dicom(bundled("MR_small.dcm"), output="uint8").pixels
    np.testing.assert_array_equal(as_uint8, np.round(expected * 255).astype(np.uint8))


def test_apply_window_numbers() -> None:
    assert WINDOW_PRESETS == {
        "lung": (-600.0, 1500.0),
        "mediastinum": (50.0, 350.0),
        "bone": (400.0, 1800.0),
        "brain": (40.0, 80.0),
        "soft_tissue": (40.0, 400.0),
    }
    values = np.array([-2000.0, -1350.0, -600.0, 149.0, 1000.0])
    np.testing.assert_allclose(
        apply_window(values, *WINDOW_PRESETS["lung"]), [0.0, 0.0, 0.5 + 0.5 / 1499, 1.0, 1.0]
    )
    brain = apply_window(np.array([0.0, 40.0, 79.0, 80.0]), *WINDOW_PRESETS["brain"])
    np.testing.assert_allclose(brain, [0.0, 0.5 + 0.5 / 79, 1.0, 1.0])
    exact = apply_window(np.array([-10.0, 0.0, 5.0, 10.0]), 0.0, 20.0, "LINEAR_EXACT")
    np.testing.assert_allclose(exact, [0.0, 0.5, 0.75, 1.0])
    sigmoid = apply_window(np.array([0.0, 10.0]), 0.0, 20.0, "SIGMOID")
    np.testing.assert_allclose(sigmoid, [0.5, 1 / (1 + np.exp(-2.0))])
    with pytest.raises(ValueError, match="width >= 1"):
        apply_window(values, 0.0, 0.5)


def test_monochrome1_is_inverted_after_the_window(tmp_path: Path) -> None:
    stored = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "mono1.dcm", stored, "MONOCHROME1", 12, WindowCenter=2048, WindowWidth=4096
    )
    image = read_dicom(path)
    windowed = np.clip((stored - 2047.5) / 4095 + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, 1.0 - windowed, atol=1e-6)
    assert image.meta["Inverted"] is True
    assert image.pixels[0, 0] > image.pixels[1, 1]


def test_voi_lut_sequence_takes_precedence(tmp_path: Path) -> None:
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [4, 0, 8])
    lut.add_new("LUTData", "US", [0, 100, 200, 255])
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "lut.dcm", stored, WindowCenter=1, WindowWidth=2, VOILUTSequence=[lut]
    )
    image = read_dicom(path)
    assert image.meta["WindowSource"] == "file VOI LUT"
    np.testing.assert_allclose(image.pixels, np.array([[0, 100], [200, 255]]) / 255, atol=1e-6)


def test_multi_frame_selection() -> None:
    path = bundled("rtdose.dcm")
    ds = pydicom.dcmread(path)
    stored = np.frombuffer(ds.PixelData, dtype="<u4").reshape(15, 10, 10)
    everything = read_dicom(path, window=None)
    assert everything.frames == 15 and everything.pixels.shape == (15, 10, 10)
    np.testing.assert_array_equal(everything.pixels, stored.astype(np.float32))
    for frame in (0, 7, 14):
        one = read_dicom(path, frame=frame, window=None)
        assert one.pixels.shape == (10, 10) and one.frames == 15
        np.testing.assert_array_equal(one.pixels, stored[frame].astype(np.float32))
    colour = read_dicom(bundled("SC_rgb_rle_2frame.dcm"), frame=1)
    assert colour.pixels.shape == (100, 100, 3)
    with pytest.raises(DicomReadError, match="frame 15 requested but the file has 15 frame"):
        read_dicom(path, frame=15)


def test_ybr_is_converted_to_rgb() -> None:
    reference = read_dicom(bundled("SC_rgb_rle.dcm"), output="uint8")
    ybr = read_dicom(bundled("SC_ybr_full_422_uncompressed.dcm"), output="uint8")
    assert ybr.meta["PhotometricInterpretation"] == "YBR_FULL_422"
    assert ybr.pixels.shape == reference.pixels.shape == (100, 100, 3)
    difference = np.abs(ybr.pixels.astype(int) - reference.pixels.astype(int))
    assert difference.max() <= 8
    np.testing.assert_allclose(reference.pixels[5, 50], [255, 0, 0])
    np.testing.assert_allclose(ybr.pixels[5, 50], [255, 0, 0], atol=2)
    np.testing.assert_allclose(ybr.pixels[45, 50], [0, 0, 255], atol=2)
    big_endian = read_dicom(bundled("ExplVR_BigEnd.dcm"), output="uint8").pixels
    ds = pydicom.dcmread(bundled("ExplVR_BigEnd.dcm"))
    raw = np.frombuffer(ds.PixelData, np.uint8)
    if ds.PlanarConfiguration == 1:
        expected = raw.reshape(3, 60, 80).transpose(1, 2, 0)
    else:
        expected = raw.reshape(60, 80, 3)
    np.testing.assert_array_equal(big_endian, expected)


def test_palette_colour_becomes_rgb() -> None:
    image = read_dicom(bundled("examples_palette.dcm"))
    assert image.pixels.shape == (350, 800, 3)
    assert image.meta["PhotometricInterpretation"] == "PALETTE COLOR"
    assert len(np.unique(image.pixels.reshape(-1, 3), axis=0)) > 10


def test_phi_never_leaves_the_reader(tmp_path: Path) -> None:
    stored = np.arange(64, dtype=np.uint16).reshape(8, 8)
    path = write_dicom(tmp_path / "phi.dcm", stored, BodyPartExamined="CHEST")
    assert pydicom.dcmread(path).PatientName == FAKE_PHI["PatientName"]
    image = read_dicom(path)
    assert set(image.meta) - set(SAFE_TAGS) <= {
        "TransferSyntaxUID",
        "TransferSyntax",
        "WindowSource",
        "WindowCenterUsed",
        "WindowWidthUsed",
        "VOILUTFunctionUsed",
        "Inverted",
    }
    assert image.meta["BodyPartExamined"] == "CHEST"
    assert_no_phi(str(image.meta), repr(image), str(image))

    truncated = tmp_path / "phi_truncated.dcm"
    truncated.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DicomReadError, match="truncated pixel data") as error:
        read_dicom(truncated)
    assert_no_phi(str(error.value))

    ct = read_dicom(bundled("CT_small.dcm"))
    assert "CompressedSamples" not in repr(ct)


def test_non_dicom_file_named_dcm(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("this is a text file, not an image\n" * 10)
    with pytest.raises(DicomReadError, match="not a DICOM file") as error:
        read_dicom(path)
    assert str(path) in str(error.value)
    with pytest.raises(DicomReadError, match="no such file"):
        read_dicom(tmp_path / "missing.dcm")


def test_truncated_and_image_less_files(tmp_path: Path) -> None:
    data = bundled("CT_small.dcm").read_bytes()
    half = tmp_path / "half.dcm"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomReadError, match=r"truncated pixel data: \d+ of 32768 bytes"):
        read_dicom(half)
    header_only = tmp_path / "header_only.dcm"
    header_only.write_bytes(data[:1500])
    with pytest.raises(
        DicomReadError, match=r"truncated file: it ends inside element \(0019,1003\)"
    ):
        read_dicom(header_only)
    before_rows = tmp_path / "before_rows.dcm"
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(before_rows, enforce_file_format=True)
    with pytest.raises(DicomReadError, match="CT Image Storage object.*probably truncated"):
        read_dicom(before_rows)
    with pytest.raises(DicomReadError, match="Basic Text SR Storage object, not an image"):
        read_dicom(bundled("reportsi.dcm"))


def test_compressed_syntax_without_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = get_decoder(JPEG2000)
    # Simulate a machine without pylibjpeg-openjpeg: pydicom keeps its plugin table on the decoder.
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg", "pylibjpeg-openjpeg")})
    with pytest.raises(DicomReadError, match="install pylibjpeg and pylibjpeg-openjpeg") as error:
        read_dicom(bundled("JPEG2000.dcm"))
    assert "JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)" in str(error.value)

    path = write_dicom(tmp_path / "video.dcm", np.zeros((4, 4), np.uint8), bits_stored=8)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 12])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(
        DicomReadError, match="pydicom has no pixel decoder for transfer syntax MPEG2"
    ):
        read_dicom(path)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="window must be one of auto, percentile, lung"):
        read_dicom(bundled("CT_small.dcm"), window="lungs")
    with pytest.raises(ValueError, match="output must be"):
        read_dicom(bundled("CT_small.dcm"), output="int16")  # type: ignore[arg-type]


def test_image_reader_by_suffix(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(
        image_reader(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, -1)
    )

    deep = (grey.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(image_reader(tmp_path / "deep.png")[..., 0], grey)

    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "red.jpg", quality=95)
    jpeg = image_reader(tmp_path / "red.jpg")
    assert jpeg.shape == (8, 8, 3) and abs(int(jpeg[4, 4, 0]) - 200) <= 3

    dicom = image_reader(bundled("CT_small.dcm"))
    assert dicom.shape == (128, 128, 3) and dicom.dtype == np.uint8
    no_suffix = tmp_path / "IM0001"
    no_suffix.write_bytes(bundled("CT_small.dcm").read_bytes())
    np.testing.assert_array_equal(image_reader(no_suffix), dicom)
    assert image_reader(bundled("rtdose.dcm")).shape == (10, 10, 3)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match="not a readable image") as error:
        image_reader(broken)
    assert str(broken) in str(error.value)


def test_decode_throughput_counts() -> None:
    stats = decode_throughput([bundled("CT_small.dcm"), bundled("rtdose.dcm")], repeats=2)
    assert stats["files"] == 4 and stats["frames"] == 2 * (1 + 15)
    assert stats["seconds"] > 0 and stats["megapixels_per_s"] > 0
    single = decode_throughput([bundled("rtdose.dcm")], frame=3)
    assert single["frames"] == 1
    assert UID(read_dicom(bundled("CT_small.dcm")).meta["TransferSyntaxUID"]).is_little_endian
