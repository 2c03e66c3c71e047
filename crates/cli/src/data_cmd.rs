//! `finetune data split|clean|dedup|filter|select|augment|stats`: prepare fine-tuning data from the user's files. Argument parsing and glue
//! only; the work is done by `finetune_data`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use finetune_data::augment::{augment_examples, EdaOptions};
use finetune_data::clean::{clean_examples, dedup, overlap, CleanOptions, Normalization};
use finetune_data::near_dup::{NearDupIndex, NearDupOptions, Shingles};
use finetune_data::quality::{apply_filters, language, Filter};
use finetune_data::read::is_token_level;
use finetune_data::select::{k_center_greedy, length_bins, select_balanced, select_by_loss, select_random};
use finetune_data::split::{
    balanced_class_weights, oversample, random_split, stratified_kfold, stratified_split, undersample,
};
use finetune_data::stats::{stats, token_stats, LengthStats};
use finetune_data::wordnet::WordNet;
use finetune_data::write::{atomic_write, write_conll, write_examples, Columns};
use finetune_data::{
    read_examples, read_tokens, Dataset, Example, Format, LabelMap, ReadOptions, ReadReport, SplitSpec,
};
use finetune_train::workflow::{embed_examples, example_losses, InferOptions};
use finetune_train::Pooling;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Split one file into train/validation[/test] files (seeded; `--stratify` keeps label proportions).
    /// Outputs keep the input's format with the text, text-pair and label columns only.
    #[command(after_help = "Examples:
  finetune data split movie_reviews.csv --split 80/10/10 --stratify --seed 42 -o data/
  finetune data split spam_assassin.jsonl --split 90/10 --stratify --resample over -o data/
  finetune data split wnut16.conll --split 80/10/10 -o ner/            # sentences, seeded random
  finetune data split reviews.csv --kfold 5 --stratify -o folds/       # fold-1/train.csv, fold-1/validation.csv, ...")]
    Split {
        /// The file to split (CSV, TSV, JSONL, CoNLL, plain text, Parquet or a save_to_disk folder).
        file: PathBuf,
        /// Percentages: train/validation/test, or train/validation.
        #[arg(long, default_value = "80/10/10")]
        split: String,
        /// Seed of the shuffle (the same seed gives the same split on every machine).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Split every class in proportion (like scikit-learn's StratifiedShuffleSplit).
        #[arg(long)]
        stratify: bool,
        /// Folder for train/validation/test files (created if missing).
        #[arg(long, short = 'o')]
        output_dir: PathBuf,
        /// Re-sample the train part only (seeded): `over` repeats minority-class examples up to the majority
        /// count, `under` drops majority-class examples down to the minority count.
        #[arg(long, value_enum)]
        resample: Option<ResampleArg>,
        /// Instead of one split, write K stratified cross-validation folds: fold-1/train + fold-1/validation, ...
        #[arg(long, value_name = "K", conflicts_with = "split")]
        kfold: Option<usize>,
        #[command(flatten)]
        read: Box<ReadArgs>,
        #[command(flatten)]
        clean: Box<CleanArgs>,
    },
    /// Clean texts and optionally drop exact duplicates; writes one file with the text, text-pair and label
    /// columns only.
    #[command(after_help = "Examples:
  finetune data clean reviews.csv --strip-html --normalize nfkc --dedup -o clean.csv
  finetune data clean spam_assassin.jsonl --collapse-whitespace --dedup -o spam-clean.jsonl")]
    Clean {
        /// The file to clean (CSV, TSV, JSONL, plain text, Parquet or a save_to_disk folder).
        file: PathBuf,
        /// Output file; its extension picks the format (default: the input's).
        #[arg(long, short = 'o')]
        output: PathBuf,
        #[command(flatten)]
        read: Box<ReadArgs>,
        #[command(flatten)]
        clean: Box<CleanArgs>,
    },
    /// Drop exact duplicates, or with --near near-duplicates (MinHash + LSH, as the datasketch package computes
    /// them), within the file and against other files (train vs test leakage); writes the kept records and, with
    /// --report, one JSON line per cluster (the kept record and its near-duplicates) and per leaked record.
    #[command(after_help = "Examples:
  finetune data dedup assets/data/spam/spam_assassin.jsonl --near -o spam-dedup.jsonl --report clusters.jsonl
  finetune data dedup train.jsonl --near --against test.jsonl --threshold 0.7 -o train-clean.jsonl
  finetune data dedup reviews.csv --near --shingle char --ngram 5 --num-perm 256 -o reviews-dedup.csv")]
    Dedup {
        /// The file to de-duplicate (CSV, TSV, JSONL, plain text, Parquet or a save_to_disk folder).
        file: PathBuf,
        /// Output file with the kept records; its extension picks the format (default: the input's).
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Near-duplicates by estimated Jaccard similarity of shingle sets, not only exact copies.
        #[arg(long)]
        near: bool,
        /// Also drop records that nearly duplicate a record of this file (repeatable): test/validation leakage.
        #[arg(long, value_name = "FILE", requires = "near")]
        against: Vec<PathBuf>,
        /// Jaccard similarity at or above which two records are near-duplicates.
        #[arg(long, default_value_t = 0.8, requires = "near")]
        threshold: f64,
        /// MinHash permutations (datasketch's num_perm).
        #[arg(long, default_value_t = 128, requires = "near")]
        num_perm: usize,
        /// Shingles: word or char n-grams of the lowercased text.
        #[arg(long, value_enum, default_value = "word", requires = "near")]
        shingle: ShingleArg,
        /// Shingle length in words or characters.
        #[arg(long, default_value_t = 5, requires = "near")]
        ngram: usize,
        /// Seed of the MinHash permutations (datasketch's seed).
        #[arg(long, default_value_t = 1, requires = "near")]
        seed: u32,
        /// Permutation scheme: affine32 (datasketch 2's default) or legacy (datasketch before 2.0).
        #[arg(long, default_value = "affine32", requires = "near")]
        scheme: String,
        /// JSON lines: each cluster with its kept record, and each record removed as a near-copy of --against.
        #[arg(long, requires = "near")]
        report: Option<PathBuf>,
        #[command(flatten)]
        read: Box<ReadArgs>,
    },
    /// Drop low-quality texts by named heuristic filters (Gopher-style), each off unless given a threshold;
    /// reports how many texts each filter removed. With --report, one JSON line per removed text (the filter and
    /// the measured value).
    #[command(after_help = "Examples:
  finetune data filter assets/data/spam/spam_assassin.jsonl --gopher -o spam-gopher.jsonl
  finetune data filter reviews.csv --min-words 5 --max-non-letter-fraction 0.3 -o reviews-clean.csv
  finetune data filter tweets.jsonl --max-duplicate-line-fraction 0.3 --max-top-ngram-fraction 2=0.2,3=0.18 \\
      -o tweets-clean.jsonl --report removed.jsonl")]
    Filter {
        /// The file to filter (CSV, TSV, JSONL, plain text, Parquet or a save_to_disk folder).
        file: PathBuf,
        /// Output file with the kept records; its extension picks the format (default: the input's).
        #[arg(long, short = 'o')]
        output: PathBuf,
        #[command(flatten)]
        filters: Box<FilterArgs>,
        /// JSON lines: each removed record with the filter that removed it and the measured value.
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        read: Box<ReadArgs>,
    },
    /// Keep N examples by a named criterion: `random` (seeded), `class` (class-balanced: as equal a count per
    /// label as the classes allow), `length` (balanced over --bins equal-count bins of word counts), `k-center`
    /// (the k-center greedy cover of the --model encoder's sentence vectors, --pooling mean or cls: diverse examples) or `loss` (the
    /// examples with the highest cross-entropy under the --model classifier, or the lowest with --lowest, class by
    /// class with the shares of `class`).
    #[command(after_help = "Examples:
  finetune data select assets/data/sentiment/movie_reviews.csv -n 1000 --by class -o reviews-1k.csv
  finetune data select assets/data/spam/spam_assassin.jsonl -n 500 --by length --bins 5 -o spam-500.jsonl
  finetune data select train.jsonl -n 200 --by random --seed 7 -o train-200.jsonl
  finetune data select train.csv -n 500 --by k-center --model assets/all-MiniLM-L6-v2 -o train-500.csv
  finetune data select train.csv -n 500 --by loss --model runs/sentiment -o hardest-500.csv")]
    Select {
        /// The file to select from (CSV, TSV, JSONL, plain text, Parquet or a save_to_disk folder).
        file: PathBuf,
        /// Output file; its extension picks the format (default: the input's).
        #[arg(long, short = 'o')]
        output: PathBuf,
        #[command(flatten)]
        how: SelectArgs,
        #[command(flatten)]
        read: Box<ReadArgs>,
    },
    /// EDA augmentation (Wei & Zou, 2019): each record followed by `--num-aug` new ones made by synonym
    /// replacement (WordNet), random insertion, random swap and random deletion, with the same label. The new
    /// texts are cleaned as EDA's code does (lowercase letters and spaces); the originals are kept as they are.
    /// Augment training data only, never validation or test data.
    #[command(after_help = "Examples:
  finetune data augment train.csv -o train-eda.csv                       # num_aug 9, every alpha 0.1
  finetune data augment train.jsonl --num-aug 4 --alpha-sr 0.05 --alpha-ri 0.05 --alpha-rs 0.05 --alpha-rd 0.05 \\
      --seed 7 -o train-eda.jsonl
  finetune data augment train.csv --wordnet /usr/share/wordnet -o train-eda.csv

WordNet: Debian's wordnet-base (/usr/share/wordnet), or scripts/fetch.sh wordnet (assets/wordnet), or --wordnet DIR.
In a run file, the [augment] table does the same to the training data of `finetune train` (and `sweep`, `cv`).")]
    Augment {
        /// The file to augment (CSV, TSV, JSONL, plain text, Parquet or a save_to_disk folder).
        file: PathBuf,
        /// Output file; its extension picks the format (default: the input's).
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// New records per record.
        #[arg(long, default_value_t = 9)]
        num_aug: usize,
        /// Fraction of a text's words replaced by a WordNet synonym.
        #[arg(long, default_value_t = 0.1)]
        alpha_sr: f64,
        /// Fraction of a text's word count inserted as synonyms of its words.
        #[arg(long, default_value_t = 0.1)]
        alpha_ri: f64,
        /// Fraction of a text's word count swapped.
        #[arg(long, default_value_t = 0.1)]
        alpha_rs: f64,
        /// Probability that each word is deleted.
        #[arg(long, default_value_t = 0.1)]
        alpha_rd: f64,
        /// The WordNet database folder (index.noun, data.noun, noun.exc, ...).
        #[arg(long)]
        wordnet: Option<PathBuf>,
        /// Seed of the augmentation.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        read: Box<ReadArgs>,
    },
    /// Counts, label balance, text lengths, duplicates, and train/validation/test overlap.
    #[command(after_help = "Examples:
  finetune data stats --train-file spam_assassin.jsonl
  finetune data stats --train-file data/train.csv --validation-file data/validation.csv --test-file data/test.csv
  finetune data stats --train-file wnut16.conll --json")]
    Stats {
        /// Training data (CSV, TSV, JSONL, CoNLL, plain text, Parquet or a save_to_disk folder).
        #[arg(long)]
        train_file: PathBuf,
        /// Validation data: also counted, and checked for texts shared with the training data (default: none).
        #[arg(long)]
        validation_file: Option<PathBuf>,
        /// Test data: also counted, and checked for texts shared with train/validation (default: none).
        #[arg(long)]
        test_file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        read: Box<ReadArgs>,
    },
}

/// How to read the input files; names follow the HF example scripts.
#[derive(Args, Debug)]
pub struct ReadArgs {
    /// csv, tsv, jsonl, conll, text, parquet or arrow (default: by extension; a folder is a `datasets`
    /// save_to_disk folder).
    #[arg(long)]
    format: Option<String>,
    /// Column (CSV/TSV) or field (JSONL) with the text.
    #[arg(long, default_value = "text")]
    text_column_name: String,
    /// Column or field with the second text of sentence pairs (default: none).
    #[arg(long)]
    text_pair_column_name: Option<String>,
    /// Column or field with the label.
    #[arg(long, default_value = "label")]
    label_column_name: String,
    /// The data has no label column.
    #[arg(long)]
    no_label: bool,
    /// Split label cells on this string for multi-label CSV/TSV (e.g. "|").
    #[arg(long)]
    label_separator: Option<String>,
    /// CSV/TSV delimiter, one character (default: by format).
    #[arg(long)]
    delimiter: Option<char>,
    /// CoNLL token column (0-based).
    #[arg(long, default_value_t = 0)]
    token_column: usize,
    /// CoNLL tag column (0-based; default: the last).
    #[arg(long)]
    tag_column: Option<usize>,
    /// Count and skip malformed records instead of stopping at the first.
    #[arg(long)]
    skip_bad_records: bool,
}

impl ReadArgs {
    fn options(&self) -> anyhow::Result<ReadOptions> {
        let delimiter = match self.delimiter {
            None => None,
            Some(c) if c.is_ascii() => Some(c as u8),
            Some(c) => bail!("--delimiter must be one ASCII character, got {c:?}"),
        };
        Ok(ReadOptions {
            format: self.format.as_deref().map(Format::parse).transpose()?,
            delimiter,
            text_column_name: self.text_column_name.clone(),
            text_pair_column_name: self.text_pair_column_name.clone(),
            label_column_name: (!self.no_label).then(|| self.label_column_name.clone()),
            label_separator: self.label_separator.clone(),
            token_column: self.token_column,
            tag_column: self.tag_column,
            skip_bad_records: self.skip_bad_records,
            dataset_split: None,
        })
    }

    fn columns(&self) -> Columns {
        Columns {
            text: self.text_column_name.clone(),
            text_pair: self.text_pair_column_name.clone(),
            label: (!self.no_label).then(|| self.label_column_name.clone()),
            label_separator: self.label_separator.clone().unwrap_or_else(|| "|".into()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResampleArg {
    Over,
    Under,
}

/// The quality filters, in the order they are applied; each is off unless given.
#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Gopher's thresholds (Rae et al. 2021) for every filter not given: 50..100000 words, mean word length
    /// 3..10, symbol/word ratio 0.1, alphabetic-word fraction 0.8, duplicate lines 0.3 (characters 0.2), top
    /// 2/3/4-grams 0.2/0.18/0.16, duplicate 5..10-grams 0.15..0.10.
    #[arg(long)]
    gopher: bool,
    /// Fewer words than this: removed.
    #[arg(long)]
    min_words: Option<usize>,
    /// More words than this: removed.
    #[arg(long)]
    max_words: Option<usize>,
    /// Mean characters per word below this: removed.
    #[arg(long)]
    min_mean_word_length: Option<f64>,
    /// Mean characters per word above this: removed.
    #[arg(long)]
    max_mean_word_length: Option<f64>,
    /// Occurrences of "#", "..." and "…" per word above this: removed.
    #[arg(long)]
    max_symbol_word_ratio: Option<f64>,
    /// Fraction of words with a letter below this: removed.
    #[arg(long)]
    min_alpha_word_fraction: Option<f64>,
    /// Fraction of non-space characters that are not letters above this: removed.
    #[arg(long)]
    max_non_letter_fraction: Option<f64>,
    /// A line longer than this many characters: removed.
    #[arg(long)]
    max_line_length: Option<usize>,
    /// Fraction of non-empty lines repeating an earlier line above this: removed.
    #[arg(long)]
    max_duplicate_line_fraction: Option<f64>,
    /// Fraction of characters in repeated lines above this: removed.
    #[arg(long)]
    max_duplicate_line_char_fraction: Option<f64>,
    /// N=FRACTION[,N=FRACTION...] for n = 2..4: characters covered by the most frequent word n-gram.
    #[arg(long, value_name = "N=FRACTION,...")]
    max_top_ngram_fraction: Option<String>,
    /// N=FRACTION[,N=FRACTION...] for n = 5..10: characters in word n-grams repeating an earlier one.
    #[arg(long, value_name = "N=FRACTION,...")]
    max_duplicate_ngram_fraction: Option<String>,
    /// Detected language other than this one (ISO 639-3, as `eng`, `deu`, `fra`; detection by the whatlang
    /// crate): removed.
    #[arg(long, value_name = "CODE")]
    language: Option<String>,
    /// With --language: a detection confidence (0..1) below this also removes the text.
    #[arg(long, value_name = "CONFIDENCE", requires = "language")]
    min_language_confidence: Option<f64>,
}

fn ngram_thresholds(flag: &str, v: &str) -> anyhow::Result<Vec<(usize, f64)>> {
    v.split(',')
        .map(|part| {
            let (n, f) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--{flag} {v}: expected N=FRACTION pairs such as 2=0.2,3=0.18"))?;
            let n: usize =
                n.trim().parse().map_err(|_| anyhow::anyhow!("--{flag} {v}: {n:?} is not an n-gram size"))?;
            let f: f64 = f.trim().parse().map_err(|_| anyhow::anyhow!("--{flag} {v}: {f:?} is not a number"))?;
            Ok((n, f))
        })
        .collect()
}

impl FilterArgs {
    fn filters(&self) -> anyhow::Result<Vec<Filter>> {
        let g = self.gopher;
        let mut out = Vec::new();
        if let Some(m) = self.min_words.or(g.then_some(50)) {
            out.push(Filter::MinWords(m));
        }
        if let Some(m) = self.max_words.or(g.then_some(100_000)) {
            out.push(Filter::MaxWords(m));
        }
        if let Some(m) = self.min_mean_word_length.or(g.then_some(3.0)) {
            out.push(Filter::MinMeanWordLength(m));
        }
        if let Some(m) = self.max_mean_word_length.or(g.then_some(10.0)) {
            out.push(Filter::MaxMeanWordLength(m));
        }
        if let Some(m) = self.max_symbol_word_ratio.or(g.then_some(0.1)) {
            out.push(Filter::MaxSymbolWordRatio(m));
        }
        if let Some(m) = self.min_alpha_word_fraction.or(g.then_some(0.8)) {
            out.push(Filter::MinAlphaWordFraction(m));
        }
        if let Some(m) = self.max_non_letter_fraction {
            out.push(Filter::MaxNonLetterFraction(m));
        }
        if let Some(m) = self.max_line_length {
            out.push(Filter::MaxLineLength(m));
        }
        if let Some(m) = self.max_duplicate_line_fraction.or(g.then_some(0.3)) {
            out.push(Filter::MaxDuplicateLineFraction(m));
        }
        if let Some(m) = self.max_duplicate_line_char_fraction.or(g.then_some(0.2)) {
            out.push(Filter::MaxDuplicateLineCharFraction(m));
        }
        let top = match &self.max_top_ngram_fraction {
            Some(v) => ngram_thresholds("max-top-ngram-fraction", v)?,
            None if g => vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            None => Vec::new(),
        };
        out.extend(top.into_iter().map(|(n, f)| Filter::MaxTopNgramFraction(n, f)));
        let dup = match &self.max_duplicate_ngram_fraction {
            Some(v) => ngram_thresholds("max-duplicate-ngram-fraction", v)?,
            None if g => vec![(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)],
            None => Vec::new(),
        };
        out.extend(dup.into_iter().map(|(n, f)| Filter::MaxDuplicateNgramFraction(n, f)));
        if let Some(code) = &self.language {
            let lang = language(code).map_err(|e| anyhow::anyhow!("--language {e}"))?;
            out.push(Filter::Language(lang, self.min_language_confidence.unwrap_or(0.0)));
        }
        if out.is_empty() {
            bail!("no filter given: pass --gopher or a threshold such as --min-words 5 (see --help)");
        }
        for f in &out {
            f.check().map_err(|e| anyhow::anyhow!("--{}", e.to_string().replace('_', "-")))?;
        }
        Ok(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SelectArg {
    Random,
    Class,
    Length,
    KCenter,
    Loss,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoolingArg {
    Mean,
    Cls,
}

/// What `data select` keeps, and the model behind `--by k-center` and `--by loss`.
#[derive(Args, Debug)]
pub struct SelectArgs {
    /// How many examples to keep.
    #[arg(short = 'n', long = "num-examples")]
    n: usize,
    /// The criterion.
    #[arg(long, value_enum, default_value = "random")]
    by: SelectArg,
    /// Length bins for --by length [default: 10].
    #[arg(long)]
    bins: Option<usize>,
    /// Seed of the sampling (`k-center`: of its first center; `loss` draws nothing and refuses it) [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// `k-center`: an encoder (base or fine-tuned; its sentence vectors); `loss`: a fine-tuned single-label
    /// sequence classifier. A directory or hub id.
    #[arg(long)]
    model: Option<String>,
    /// `loss`: keep the examples with the lowest loss (the easiest) instead of the highest.
    #[arg(long)]
    lowest: bool,
    /// `k-center`: the sentence vector: `mean` (the normalised mean of the last layer's token states, as
    /// sentence-transformers embeds) or `cls` (the last layer's [CLS] state) [default: mean].
    #[arg(long, value_enum)]
    pooling: Option<PoolingArg>,
    /// Tokens per example for the model (capped by it) [default: 128].
    #[arg(long)]
    max_seq_length: Option<usize>,
    /// Examples per forward pass of the model [default: 64].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Matmuls in bfloat16 with f32 accumulation, as `bf16 = true` in training.
    #[arg(long)]
    bf16: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShingleArg {
    Word,
    Char,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NormalizeArg {
    Nfc,
    Nfkc,
}

/// Cleaning steps, each off unless asked for.
#[derive(Args, Debug)]
pub struct CleanArgs {
    /// Remove HTML tags and decode HTML entities.
    #[arg(long)]
    strip_html: bool,
    /// Unicode normalisation.
    #[arg(long, value_enum)]
    normalize: Option<NormalizeArg>,
    /// Remove control and invisible format characters.
    #[arg(long)]
    remove_control: bool,
    /// Collapse whitespace runs and trim.
    #[arg(long)]
    collapse_whitespace: bool,
    /// Drop exact duplicates (after cleaning), keeping the first.
    #[arg(long)]
    dedup: bool,
}

impl CleanArgs {
    fn options(&self) -> CleanOptions {
        CleanOptions {
            strip_html: self.strip_html,
            normalization: self.normalize.map(|n| match n {
                NormalizeArg::Nfc => Normalization::Nfc,
                NormalizeArg::Nfkc => Normalization::Nfkc,
            }),
            remove_control: self.remove_control,
            collapse_whitespace: self.collapse_whitespace,
        }
    }
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Split { file, split, seed, stratify, output_dir, resample, kfold, read, clean } => {
            let plan = SplitPlan { split, seed, stratify, resample, kfold };
            split_cmd(&file, &plan, &output_dir, &read, &clean)
        }
        DataCommand::Clean { file, output, read, clean } => clean_cmd(&file, &output, &read, &clean),
        DataCommand::Dedup {
            file,
            output,
            near,
            against,
            threshold,
            num_perm,
            shingle,
            ngram,
            seed,
            scheme,
            report,
            read,
        } => {
            let opts = NearDupOptions {
                shingles: match shingle {
                    ShingleArg::Word => Shingles::Words(ngram),
                    ShingleArg::Char => Shingles::Chars(ngram),
                },
                threshold,
                num_perm,
                seed,
                scheme: scheme.parse().map_err(|e| anyhow::anyhow!("--scheme: {e}"))?,
            };
            let near = near.then_some(opts);
            dedup_cmd(&file, &output, near, &against, report.as_deref(), &read)
        }
        DataCommand::Filter { file, output, filters, report, read } => {
            filter_cmd(&file, &output, &filters, report.as_deref(), &read)
        }
        DataCommand::Select { file, output, how, read } => select_cmd(&file, &output, &how, &read),
        DataCommand::Augment { file, output, num_aug, alpha_sr, alpha_ri, alpha_rs, alpha_rd, wordnet, seed, read } => {
            let eda = EdaOptions { alpha_sr, alpha_ri, alpha_rs, alpha_rd, num_aug };
            augment_cmd(&file, &output, &eda, wordnet.as_deref(), seed, &read)
        }
        DataCommand::Stats { train_file, validation_file, test_file, json, read } => {
            stats_cmd(&train_file, validation_file.as_deref(), test_file.as_deref(), json, &read)
        }
    }
}

fn note_report(path: &str, r: &ReadReport) {
    if r.skipped > 0 {
        eprintln!("warning: {path}: skipped {} bad records; first: {}", r.skipped, r.first_errors.join(" | "));
    }
    if r.blank_lines > 0 {
        eprintln!("note: {path}: {} blank lines ignored", r.blank_lines);
    }
}

fn read_checked(path: &Path, opts: &ReadOptions) -> anyhow::Result<Dataset> {
    let d = read_examples(path, opts)?;
    note_report(&d.path, &d.report);
    if d.examples.is_empty() {
        bail!("{}: no examples", d.path);
    }
    Ok(d)
}

fn extension(format: Format) -> &'static str {
    match format {
        Format::Csv => "csv",
        Format::Tsv => "tsv",
        Format::Jsonl | Format::Parquet | Format::Arrow => "jsonl",
        Format::Conll => "conll",
        Format::Text => "txt",
    }
}

/// The format written for records read as `input`: the output's extension, else the input's, and JSON Lines
/// for Parquet and Arrow inputs (they are read, not written).
fn output_format(output: &Path, input: Format) -> Format {
    match Format::from_path(output) {
        Some(f) => f,
        None if input.is_columnar() => Format::Jsonl,
        None => input,
    }
}

struct SplitPlan {
    split: String,
    seed: u64,
    stratify: bool,
    resample: Option<ResampleArg>,
    kfold: Option<usize>,
}

fn split_cmd(file: &Path, plan: &SplitPlan, out: &Path, read: &ReadArgs, clean: &CleanArgs) -> anyhow::Result<()> {
    let (seed, stratify) = (plan.seed, plan.stratify);
    let spec = SplitSpec::parse(&plan.split)?;
    let opts = read.options()?;
    let format = opts.format_for(file)?;
    let token_level = is_token_level(file, &opts)?;
    // Parquet and Arrow inputs are split into JSON Lines (or CoNLL) files.
    let format = if format.is_columnar() { Format::Jsonl } else { format };
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    if token_level {
        if stratify || plan.resample.is_some() || plan.kfold.is_some() {
            bail!("--stratify, --resample and --kfold need one label per example; CoNLL sentences are split at random");
        }
        let d = read_tokens(file, &opts)?;
        note_report(&d.path, &d.report);
        let parts = random_split(d.sentences.len(), &spec, seed);
        for (name, idx) in spec.names().iter().zip(&parts) {
            let path = out.join(format!("{name}.conll"));
            write_conll(&path, idx.iter().map(|&i| &d.sentences[i]))?;
            println!("{name}: {} sentences -> {}", idx.len(), path.display());
        }
        return Ok(());
    }
    let mut d = read_checked(file, &opts)?;
    clean_examples(&mut d.examples, &clean.options());
    if clean.dedup {
        let r = dedup(&mut d.examples);
        println!("dedup: removed {} duplicates ({} with a different label)", r.removed, r.conflicting_labels);
    }
    let needs_labels = stratify || plan.resample.is_some() || plan.kfold.is_some();
    let keys = if needs_labels {
        let keys = d
            .examples
            .iter()
            .map(|e| match &e.label {
                Some(l) => Ok(l.strata_key()),
                None => {
                    bail!("{}:{}: --stratify, --resample and --kfold need a label on every example", d.path, e.line)
                }
            })
            .collect::<anyhow::Result<Vec<String>>>()?;
        // Class ids in label order, for re-sampling.
        let mut classes: Vec<&String> = keys.iter().collect();
        classes.sort();
        classes.dedup();
        let ids: Vec<usize> = keys.iter().map(|k| classes.binary_search(&k).unwrap_or(0)).collect();
        Some((keys.clone(), ids))
    } else {
        None
    };
    let columns = read.columns();
    let ext = extension(format);
    let resample = |train: &[usize]| -> Vec<usize> {
        match (plan.resample, &keys) {
            (Some(how), Some((_, ids))) => {
                let y: Vec<usize> = train.iter().map(|&i| ids[i]).collect();
                let picked = if how == ResampleArg::Over { oversample(&y, seed) } else { undersample(&y, seed) };
                picked.into_iter().map(|j| train[j]).collect()
            }
            _ => train.to_vec(),
        }
    };
    if let (Some(k), Some((strata, _))) = (plan.kfold, &keys) {
        for (f, fold) in stratified_kfold(strata, k, seed)?.iter().enumerate() {
            let dir = out.join(format!("fold-{}", f + 1));
            std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create the folder", dir.display()))?;
            for (name, idx) in [("train", resample(&fold.train)), ("validation", fold.test.clone())] {
                let path = dir.join(format!("{name}.{ext}"));
                write_examples(&path, format, &columns, idx.iter().map(|&i| &d.examples[i]))?;
                println!("fold {} {name}: {} examples -> {}", f + 1, idx.len(), path.display());
            }
        }
    } else {
        let mut parts = match (&keys, stratify) {
            (Some((strata, _)), true) => stratified_split(strata, &spec, seed),
            _ => random_split(d.examples.len(), &spec, seed),
        };
        parts[0] = resample(&parts[0]);
        for (name, idx) in spec.names().iter().zip(&parts) {
            let path = out.join(format!("{name}.{ext}"));
            write_examples(&path, format, &columns, idx.iter().map(|&i| &d.examples[i]))?;
            println!("{name}: {} examples -> {}", idx.len(), path.display());
        }
    }
    if d.examples.iter().any(|e| e.label.is_some()) {
        let map = LabelMap::from_examples(&d.examples)?;
        let path = out.join("labels.json");
        let text = serde_json::to_string_pretty(&map.to_config_json())?;
        atomic_write(&path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
        println!("labels: {} classes -> {}", map.len(), path.display());
    }
    Ok(())
}

fn clean_cmd(file: &Path, output: &Path, read: &ReadArgs, clean: &CleanArgs) -> anyhow::Result<()> {
    let opts = read.options()?;
    let in_format = opts.format_for(file)?;
    if is_token_level(file, &opts)? {
        bail!("{}: cleaning works on text examples; token lists are left as they are", file.display());
    }
    let out_format = output_format(output, in_format);
    if out_format.is_token_level() {
        bail!("{}: cannot write text examples as CoNLL", output.display());
    }
    let mut d = read_checked(file, &opts)?;
    clean_examples(&mut d.examples, &clean.options());
    if clean.dedup {
        let r = dedup(&mut d.examples);
        println!("dedup: removed {} duplicates ({} with a different label)", r.removed, r.conflicting_labels);
    }
    write_examples(output, out_format, &read.columns(), &d.examples)?;
    println!("{} examples -> {}", d.examples.len(), output.display());
    Ok(())
}

fn lengths(name: &str, l: &Option<LengthStats>) -> String {
    match l {
        None => format!("{name}: -"),
        Some(l) => format!(
            "{name}: min {} mean {} p50 {} p90 {} p95 {} p99 {} max {}",
            num(l.min),
            num(l.mean),
            num(l.p50),
            num(l.p90),
            num(l.p95),
            num(l.p99),
            num(l.max)
        ),
    }
}

/// Whole numbers as they are, others to one decimal (interpolated percentiles carry float noise).
fn num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x}")
    } else {
        format!("{x:.1}")
    }
}

fn stats_cmd(
    train: &Path,
    validation: Option<&Path>,
    test: Option<&Path>,
    json: bool,
    read: &ReadArgs,
) -> anyhow::Result<()> {
    let opts = read.options()?;
    let files: Vec<(&str, &Path)> = [("train", Some(train)), ("validation", validation), ("test", test)]
        .into_iter()
        .filter_map(|(n, p)| p.map(|p| (n, p)))
        .collect();
    let mut out = serde_json::Map::new();
    if is_token_level(train, &opts)? {
        let mut map: Option<LabelMap> = None;
        for (name, path) in files {
            let d = read_tokens(path, &opts)?;
            note_report(&d.path, &d.report);
            match &map {
                None => map = Some(LabelMap::from_tags(&d.sentences)?),
                Some(m) => m.check_tags(&d.sentences, &d.path)?,
            }
            let s = token_stats(&d.sentences);
            if json {
                out.insert(name.into(), serde_json::to_value(&s)?);
            } else {
                println!("{name} ({}): {} sentences, {} tokens", d.path, s.sentences, s.tokens);
                let ents: Vec<String> = s.entity_counts.iter().map(|(n, c)| format!("{n} {c}")).collect();
                println!("  entities: {}", ents.join(", "));
                println!("  {}", lengths("tokens per sentence", &s.sentence_tokens));
            }
        }
    } else {
        let mut train_data: Option<Dataset> = None;
        let mut map: Option<LabelMap> = None;
        for (name, path) in files {
            let d = read_checked(path, &opts)?;
            let s = stats(&d.examples);
            if d.examples.iter().any(|e| e.label.is_some()) {
                match &map {
                    None => map = Some(LabelMap::from_examples(&d.examples)?),
                    Some(m) => m.check_examples(&d.examples, &d.path)?,
                }
            }
            let mut entry = serde_json::to_value(&s)?;
            if let Some(t) = &train_data {
                let o = overlap(&t.examples, &d.examples);
                if let Some(w) = o.warning(&t.path, &d.path) {
                    eprintln!("{w}");
                }
                entry["overlap_with_train"] = o.overlapping.into();
            }
            if json {
                out.insert(name.into(), entry);
            } else {
                println!(
                    "{name} ({}): {} examples, {} labelled, {} duplicates",
                    d.path, s.examples, s.labelled, s.duplicates
                );
                if !s.label_counts.is_empty() {
                    let total: usize = s.label_counts.iter().map(|c| c.1).sum();
                    let parts: Vec<String> = s
                        .label_counts
                        .iter()
                        .map(|(n, c)| format!("{n} {c} ({:.1}%)", 100.0 * *c as f64 / total as f64))
                        .collect();
                    println!("  labels: {}", parts.join(", "));
                    if let (Some(m), "train") = (&map, name) {
                        if let Ok(y) = m.encode_examples(&d.examples, &d.path) {
                            let w = balanced_class_weights(&y, m.len())?;
                            let ws: Vec<String> =
                                m.names().iter().zip(&w).map(|(n, w)| format!("{n} {w:.4}")).collect();
                            println!("  class weights (balanced): {}", ws.join(", "));
                        }
                    }
                }
                println!("  {}", lengths("characters", &s.chars));
                println!("  {}", lengths("words", &s.words));
            }
            if train_data.is_none() {
                train_data = Some(d);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// The text a record is compared by: its text, and its second text when there is one.
fn compare_text(e: &Example) -> String {
    match &e.text_pair {
        None => e.text.clone(),
        Some(p) => format!("{}\n{}", e.text, p),
    }
}

fn dedup_cmd(
    file: &Path,
    output: &Path,
    near: Option<NearDupOptions>,
    against: &[PathBuf],
    report: Option<&Path>,
    read: &ReadArgs,
) -> anyhow::Result<()> {
    let opts = read.options()?;
    let in_format = opts.format_for(file)?;
    if is_token_level(file, &opts)? {
        bail!("{}: dedup takes CSV, TSV, JSONL or text records, not token-classification sentences", file.display());
    }
    let out_format = output_format(output, in_format);
    let mut d = read_checked(file, &opts)?;
    let Some(near) = near else {
        let r = dedup(&mut d.examples);
        write_examples(output, out_format, &read.columns(), d.examples.iter())?;
        println!(
            "{}: removed {} exact duplicates ({} with a different label); wrote {} records to {}",
            d.path,
            r.removed,
            r.conflicting_labels,
            d.examples.len(),
            output.display()
        );
        return Ok(());
    };
    let refs: Vec<Dataset> = against.iter().map(|p| read_checked(p, &opts)).collect::<anyhow::Result<_>>()?;
    let texts: Vec<String> = d.examples.iter().map(compare_text).collect();
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let index = NearDupIndex::new(&text_refs, near)?;
    let clusters = index.clusters();
    let mut removed = vec![false; texts.len()];
    for i in clusters.removed() {
        removed[i] = true;
    }
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let rec = |path: &str, e: &Example| serde_json::json!({ "file": path, "line": e.line, "text": compare_text(e) });
    for c in &clusters.clusters {
        let dups: Vec<serde_json::Value> = c
            .duplicates
            .iter()
            .map(|&(i, s)| {
                let mut v = rec(&d.path, &d.examples[i]);
                v["jaccard"] = serde_json::json!(s);
                v
            })
            .collect();
        lines.push(serde_json::json!({ "kept": rec(&d.path, &d.examples[c.representative]), "duplicates": dups }));
    }
    // Leakage: records of the input that nearly duplicate a record of another file.
    let mut leaked = 0;
    for r in &refs {
        let other: Vec<String> = r.examples.iter().map(compare_text).collect();
        let other_refs: Vec<&str> = other.iter().map(String::as_str).collect();
        let ref_index = NearDupIndex::new(&other_refs, near)?;
        for (i, hits) in ref_index.matches_of(&text_refs) {
            if !removed[i] {
                removed[i] = true;
                leaked += 1;
            }
            let matches: Vec<serde_json::Value> = hits
                .iter()
                .map(|&(j, s)| {
                    let mut v = rec(&r.path, &r.examples[j]);
                    v["jaccard"] = serde_json::json!(s);
                    v
                })
                .collect();
            lines.push(serde_json::json!({ "removed": rec(&d.path, &d.examples[i]), "matches": matches }));
        }
    }
    let kept: Vec<&Example> = d.examples.iter().zip(&removed).filter(|(_, &r)| !r).map(|(e, _)| e).collect();
    if let Some(p) = report {
        atomic_write(p, |w| {
            for l in &lines {
                writeln!(w, "{l}")?;
            }
            Ok(())
        })?;
    }
    write_examples(output, out_format, &read.columns(), kept.iter().copied())?;
    let within = clusters.removed().len();
    println!(
        "{}: {} records; MinHash {} permutations, LSH {} bands x {} rows, Jaccard >= {}: {} candidate pairs, {} \
         similar; {} clusters, {} near-duplicates removed",
        d.path,
        texts.len(),
        near.num_perm,
        index.bands,
        index.rows,
        near.threshold,
        clusters.candidate_pairs,
        clusters.verified_pairs,
        clusters.clusters.len(),
        within
    );
    for r in &refs {
        println!("  against {}: {} records", r.path, r.examples.len());
    }
    if !refs.is_empty() {
        println!("  {leaked} more removed as near-duplicates of --against records");
    }
    println!("wrote {} records to {}", kept.len(), output.display());
    if let Some(p) = report {
        println!("report: {} lines -> {}", lines.len(), p.display());
    }
    Ok(())
}

fn filter_cmd(
    file: &Path,
    output: &Path,
    args: &FilterArgs,
    report: Option<&Path>,
    read: &ReadArgs,
) -> anyhow::Result<()> {
    let filters = args.filters()?;
    let opts = read.options()?;
    let in_format = opts.format_for(file)?;
    if is_token_level(file, &opts)? {
        bail!("{}: filter takes CSV, TSV, JSONL or text records, not token-classification sentences", file.display());
    }
    let out_format = output_format(output, in_format);
    let d = read_checked(file, &opts)?;
    let texts: Vec<String> = d.examples.iter().map(compare_text).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (verdicts, r) = apply_filters(&refs, &filters)?;
    if let Some(p) = report {
        atomic_write(p, |w| {
            for (e, v) in d.examples.iter().zip(&verdicts) {
                if let Some((k, value)) = v {
                    let line = serde_json::json!({
                        "file": d.path, "line": e.line, "filter": filters[*k].name(), "value": value,
                        "text": compare_text(e),
                    });
                    writeln!(w, "{line}")?;
                }
            }
            Ok(())
        })?;
    }
    let kept = d.examples.iter().zip(&verdicts).filter(|(_, v)| v.is_none()).map(|(e, _)| e);
    write_examples(output, out_format, &read.columns(), kept)?;
    println!("{}: {} records, {} kept, {} removed", d.path, r.total, r.kept, r.total - r.kept);
    for (name, n) in &r.removed {
        println!("  {name:<34} removed {n}");
    }
    println!("wrote {} records to {}", r.kept, output.display());
    Ok(())
}

fn augment_cmd(
    file: &Path,
    output: &Path,
    eda: &EdaOptions,
    wordnet: Option<&Path>,
    seed: u64,
    read: &ReadArgs,
) -> anyhow::Result<()> {
    // Flags first: a bad alpha is named before any file is read.
    eda.validate().map_err(|e| anyhow::anyhow!("--{}", e.to_string().replacen('_', "-", 1)))?;
    let opts = read.options()?;
    let in_format = opts.format_for(file)?;
    if is_token_level(file, &opts)? {
        bail!("{}: augment takes CSV, TSV, JSONL or text records, not token-classification sentences", file.display());
    }
    let dir = WordNet::locate(wordnet)?;
    let wn = WordNet::open(&dir)?;
    let d = read_checked(file, &opts)?;
    let (out, r) = augment_examples(&wn, &d.examples, eda, seed).map_err(|e| anyhow::anyhow!("{}: {e}", d.path))?;
    write_examples(output, output_format(output, in_format), &read.columns(), out.iter())?;
    println!(
        "{}: {} records + {} EDA copies (num_aug {}, seed {seed}, WordNet {}); {} without letters left as they are",
        d.path,
        r.originals,
        r.added,
        eda.num_aug,
        dir.display(),
        r.unchanged
    );
    println!("wrote {} records to {}", out.len(), output.display());
    Ok(())
}

fn select_cmd(file: &Path, output: &Path, m: &SelectArgs, read: &ReadArgs) -> anyhow::Result<()> {
    if m.seed.is_some() && m.by == SelectArg::Loss {
        bail!("--seed does not apply to --by loss (it draws nothing: the losses rank the examples)");
    }
    let (n, by, bins, seed) = (m.n, m.by, m.bins, m.seed.unwrap_or(42));
    let bins = match (bins, by) {
        (Some(_), by) if by != SelectArg::Length => bail!("--bins applies to --by length only"),
        (b, _) => b.unwrap_or(10),
    };
    let uses_model = matches!(by, SelectArg::KCenter | SelectArg::Loss);
    match (&m.model, uses_model) {
        (None, true) => bail!("--by {} needs --model", if by == SelectArg::Loss { "loss" } else { "k-center" }),
        (Some(_), false) => bail!("--model applies to --by k-center and --by loss only"),
        _ => {}
    }
    if m.lowest && by != SelectArg::Loss {
        bail!("--lowest applies to --by loss only");
    }
    if m.pooling.is_some() && by != SelectArg::KCenter {
        bail!("--pooling applies to --by k-center only");
    }
    let pooling = match m.pooling {
        Some(PoolingArg::Cls) => Pooling::Cls,
        _ => Pooling::Mean,
    };
    let model_flags = [("--max-seq-length", m.max_seq_length.is_some()), ("--batch-size", m.batch_size.is_some())];
    if let Some((flag, _)) = model_flags.iter().chain(&[("--bf16", m.bf16)]).find(|f| f.1 && !uses_model) {
        bail!("{flag} applies to --by k-center and --by loss only (the model's pass)");
    }
    let opts = read.options()?;
    let in_format = opts.format_for(file)?;
    if is_token_level(file, &opts)? {
        bail!("{}: select takes CSV, TSV, JSONL or text records, not token-classification sentences", file.display());
    }
    let out_format = output_format(output, in_format);
    let d = read_checked(file, &opts)?;
    let total = d.examples.len();
    let keys: Vec<String> = match by {
        SelectArg::Random | SelectArg::KCenter => Vec::new(),
        // A missing label is refused by the model's pass, naming the example.
        SelectArg::Loss => {
            d.examples.iter().map(|e| e.label.as_ref().map(|l| l.strata_key()).unwrap_or_default()).collect()
        }
        SelectArg::Class => d
            .examples
            .iter()
            .map(|e| match &e.label {
                Some(l) => Ok(l.strata_key()),
                None => bail!("{}:{}: --by class needs a label on every example", d.path, e.line),
            })
            .collect::<anyhow::Result<_>>()?,
        SelectArg::Length => {
            let lengths: Vec<usize> = d.examples.iter().map(|e| compare_text(e).split_whitespace().count()).collect();
            length_bins(&lengths, bins)?.into_iter().map(|b| format!("{b:04}")).collect()
        }
    };
    let infer = InferOptions {
        max_seq_length: m.max_seq_length.unwrap_or(128),
        batch_size: m.batch_size.unwrap_or(64),
        bf16: m.bf16,
        ..Default::default()
    };
    let model = m.model.as_deref().unwrap_or_default();
    let picked = match by {
        SelectArg::Random => select_random(total, n, seed),
        SelectArg::KCenter => {
            let vectors = embed_examples(model, &d.examples, &infer, &d.path, pooling)?;
            k_center_greedy(&vectors, n, seed)
        }
        SelectArg::Loss => {
            let losses = example_losses(model, &d.examples, &infer, &d.path)?;
            let picked =
                select_by_loss(&losses, &keys, n, !m.lowest).map_err(|e| anyhow::anyhow!("{}: {e}", d.path))?;
            let mean = |ix: &mut dyn Iterator<Item = usize>| {
                let v: Vec<f64> = ix.map(|i| losses[i]).collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            println!(
                "loss under {model}: mean {:.4} over all {total}, {:.4} over the {} kept",
                mean(&mut (0..total)),
                mean(&mut picked.iter().copied()),
                picked.len()
            );
            Ok(picked)
        }
        _ => select_balanced(&keys, n, seed),
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", d.path))?;
    write_examples(output, out_format, &read.columns(), picked.iter().map(|&i| &d.examples[i]))?;
    let how = if by == SelectArg::Loss { String::new() } else { format!(", seed {seed}") };
    println!("{}: selected {} of {total} examples ({by:?}{how})", d.path, picked.len());
    if matches!(by, SelectArg::Class | SelectArg::Length | SelectArg::Loss) {
        let mut counts: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
        for k in &keys {
            counts.entry(k).or_default().0 += 1;
        }
        for &i in &picked {
            counts.entry(&keys[i]).or_default().1 += 1;
        }
        let what = if by == SelectArg::Length { "length bin" } else { "class" };
        for (k, (all, got)) in counts {
            println!("  {what} {k}: {got} of {all}");
        }
    }
    println!("wrote {} records to {}", picked.len(), output.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: DataCommand,
    }

    fn run_args(args: &[&str]) -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(std::iter::once("data").chain(args.iter().copied()))?;
        run(cli.cmd)
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("finetune-data-cmd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn split_writes_stratified_files_atomically() {
        let dir = scratch("split");
        let input = dir.join("all.csv");
        let mut csv = String::from("text,label\n");
        for i in 0..100 {
            csv.push_str(&format!("\"text {i}, <b>bold</b>\",{}\n", if i % 4 == 0 { "neg" } else { "pos" }));
        }
        std::fs::write(&input, csv).unwrap();
        let out = dir.join("out");
        let args = [
            "split",
            input.to_str().unwrap(),
            "--stratify",
            "--seed",
            "7",
            "-o",
            out.to_str().unwrap(),
            "--strip-html",
        ];
        run_args(&args).unwrap();
        let mut sizes = Vec::new();
        for name in ["train", "validation", "test"] {
            let d = read_examples(&out.join(format!("{name}.csv")), &ReadOptions::default()).unwrap();
            let neg = d.examples.iter().filter(|e| e.label == Some(finetune_data::Label::Single("neg".into()))).count();
            assert!(d.examples.iter().all(|e| !e.text.contains('<')));
            sizes.push((d.examples.len(), neg));
        }
        // neg 25 → 20/2.5/2.5, pos 75 → 60/7.5/7.5: the half-items tie, the bigger class takes validation's.
        assert_eq!(sizes, [(80, 20), (10, 2), (10, 3)]);
        let labels: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("labels.json")).unwrap()).unwrap();
        assert_eq!(labels["id2label"]["0"], "neg");
        // No temporary files are left behind.
        let names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        // Same seed, same split.
        let first = std::fs::read(out.join("test.csv")).unwrap();
        run_args(&args).unwrap();
        assert_eq!(std::fs::read(out.join("test.csv")).unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kfold_and_resampling() {
        let dir = scratch("kfold");
        let input = dir.join("all.jsonl");
        let mut text = String::new();
        for i in 0..30 {
            text.push_str(&format!("{{\"text\": \"t{i}\", \"label\": \"{}\"}}\n", if i < 10 { "a" } else { "b" }));
        }
        std::fs::write(&input, text).unwrap();
        let out = dir.join("out");
        run_args(&[
            "split",
            input.to_str().unwrap(),
            "--kfold",
            "5",
            "--resample",
            "under",
            "-o",
            out.to_str().unwrap(),
        ])
        .unwrap();
        for f in 1..=5 {
            let fold = out.join(format!("fold-{f}"));
            let tr = read_examples(&fold.join("train.jsonl"), &ReadOptions::default()).unwrap();
            let va = read_examples(&fold.join("validation.jsonl"), &ReadOptions::default()).unwrap();
            // Validation: 2 of a + 4 of b; train under-sampled to 8 + 8.
            assert_eq!((tr.examples.len(), va.examples.len()), (16, 6));
        }
        let out2 = dir.join("over");
        run_args(&[
            "split",
            input.to_str().unwrap(),
            "--stratify",
            "--resample",
            "over",
            "--split",
            "50/50",
            "-o",
            out2.to_str().unwrap(),
        ])
        .unwrap();
        let tr = read_examples(&out2.join("train.jsonl"), &ReadOptions::default()).unwrap();
        assert_eq!(tr.examples.len(), 20, "train 5 a + 10 b, a over-sampled to 10");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_input_is_a_one_line_error() {
        let dir = scratch("bad");
        let input = dir.join("bad.csv");
        std::fs::write(&input, "text,label\nok,pos\nbroken\n").unwrap();
        let out = dir.join("out");
        let err = run_args(&["split", input.to_str().unwrap(), "-o", out.to_str().unwrap()]).unwrap_err();
        let msg = format!("{err:#}");
        assert_eq!(msg, format!("{}:3: expected 2 columns (as in the header), found 1", input.display()));
        let err =
            run_args(&["split", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--split", "80/30"]).unwrap_err();
        assert!(format!("{err:#}").starts_with("invalid split \"80/30\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clean_and_stats() {
        let dir = scratch("clean");
        let input = dir.join("in.jsonl");
        std::fs::write(
            &input,
            "{\"text\": \"Caf&eacute;  <i>ok</i>\", \"label\": \"a\"}\n{\"text\": \"Café ok\", \"label\": \"a\"}\n{\"text\": \"x\", \"label\": \"b\"}\n",
        )
        .unwrap();
        let output = dir.join("clean.csv");
        run_args(&[
            "clean",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--strip-html",
            "--collapse-whitespace",
            "--normalize",
            "nfc",
            "--dedup",
        ])
        .unwrap();
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "text,label\nCafé ok,a\nx,b\n");
        let test = dir.join("test.csv");
        std::fs::write(&test, "text,label\nx,b\nnew,a\n").unwrap();
        run_args(&["stats", "--train-file", output.to_str().unwrap(), "--test-file", test.to_str().unwrap(), "--json"])
            .unwrap();
        std::fs::write(&test, "text,label\nx,zzz\n").unwrap();
        let err = run_args(&["stats", "--train-file", output.to_str().unwrap(), "--test-file", test.to_str().unwrap()])
            .unwrap_err();
        assert_eq!(format!("{err:#}"), format!("{}:2: unknown label \"zzz\" (not in the label map)", test.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
