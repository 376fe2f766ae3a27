"""``crystal-designer train``, ``evaluate`` and ``build-index``: retraining and measuring the shipped models.

Training code is imported only inside these handlers, so no other command loads it.
"""

from __future__ import annotations

import json
import sys

from app.cli.output import write_json

GENERATOR_MODELS = ("segmentation_unet", "density_vae")
POINTNET_MODEL = "pointnet"
DING_MODEL = "ding"
#: Not a network: the PCA latent map of the generator's training cells (needs density_vae).
LATENT_MAP = "latent-map"
#: The all-crystal-system generator (periodic_vae).
PERIODIC_GENERATOR = "periodic-generator"
#: Not a network: a latent model's aggregate-posterior prior (``--model``; needs that model).
PRIOR = "prior"


def add_parser(commands, device_choices) -> None:
    from app.engine.training.recipes import RECIPE_NAMES

    train = commands.add_parser("train", help="retrain a model from ../shared/data (hours on CPU)")
    train.add_argument("name", choices=RECIPE_NAMES + GENERATOR_MODELS + (POINTNET_MODEL, DING_MODEL, LATENT_MAP,
                                                                         PERIODIC_GENERATOR, PRIOR))
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--fresh", action="store_true", help="ignore the checkpoint instead of resuming")
    train.add_argument("--learning-rate", type=float, default=None, help="generator models, pointnet: peak learning rate")
    train.add_argument("--paper-predictors", action="store_true",
                       help="ding: train the paper's one-hot DNN predictors instead of the shipped residual ones")
    train.add_argument("--species-weight", type=float, default=None,
                       help="density_vae: weight of the species cross-entropy")
    train.add_argument("--continue", dest="continue_shipped", action="store_true",
                       help="density_vae, pointnet: start from the shipped weights with a new learning-rate cycle")
    train.add_argument("--max-train", type=int, default=None, help="periodic-generator: fixed training subset size")
    train.add_argument("--beta", type=float, default=None, help="periodic-generator: weight of the KL divergence")
    train.add_argument("--mp-repeat", type=int, default=1,
                       help="periodic-generator: visits of each Materials Project training cell per epoch")
    train.add_argument("--write-only", action="store_true",
                       help="periodic-generator: write the best epoch of the checkpoint without training")
    train.add_argument("--model", default="density_vae", help="prior: the latent model (density_vae, periodic_vae)")
    train.add_argument("--components", type=int, default=16, help="prior: mixture components per condition decile")
    train.add_argument("--temperature", type=float, default=0.5, help="prior: factor on the fitted standard deviations")
    train.add_argument("--screen-samples", type=int, default=3,
                       help="prior: samples per component decoded to reweight components by validity (0: none)")
    train.add_argument("--check-only", action="store_true",
                       help="prior: measure the shipped prior (validity with and without it, perov_5 coverage)")
    train.add_argument("--n-check", type=int, default=1000,
                       help="prior: random samples decoded with and without the prior to measure validity (0: none)")
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="validation metrics of a shipped model")
    evaluate.add_argument("name", choices=RECIPE_NAMES + ("generator", "hull", POINTNET_MODEL, DING_MODEL,
                                                                PERIODIC_GENERATOR))
    evaluate.add_argument("--n-held-out", type=int, default=300, help="hull: held-out MP crystals")
    evaluate.add_argument("--calibrate", action="store_true",
                          help="hull: choose CHGNet's weight in the default hull energy on other held-out crystals "
                               "than the evaluated ones (prints the MAE and F1 of each weight)")
    evaluate.add_argument("--n-relax", type=int, default=None,
                          help="hull: held-out crystals also relaxed (default: all; relaxed is what candidates get)")
    evaluate.add_argument("--n-reconstruct", type=int, default=300, help="generator: cells per set")
    evaluate.add_argument("--n-samples", type=int, default=1000, help="generator: random samples")
    evaluate.add_argument("--stability", action="store_true",
                          help="generator: relax the kept candidates around held-out perovskites, compare their "
                               "E_hull with an ion-substitution baseline, report S.U.N. per base")
    evaluate.add_argument("--n-bases", type=int, default=3, help="generator --stability: held-out bases")
    evaluate.add_argument("--n-around", type=int, default=200, help="generator --stability: samples per base")
    evaluate.add_argument("--sigma", type=float, default=None, help="generator --stability: latent spread")
    evaluate.add_argument("--record", action="store_true",
                          help="generator, pointnet: store the metrics in the manifest entry and model card; "
                               "property models: store the validation parity sample in the manifest entry")
    evaluate.add_argument("--n-coverage", type=int, default=None,
                          help="generator: random samples fingerprinted for COV-R/COV-P (default --n-samples; 0: skip)")
    evaluate.add_argument("--format", choices=("json", "text"), default="json", help="generator: output format")
    from app.cli.compositions import add_sampling_arguments

    add_sampling_arguments(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    index = commands.add_parser("build-index", help="rebuild models/ training indexes and element references")
    index.set_defaults(handler=run_build_index)


def run_train(args) -> int:
    if args.name == PRIOR:
        from app.engine.training.fit_prior import check_prior, train_prior

        if args.check_only:
            write_json(check_prior(args.model, n_check=args.n_check)["metrics"])
            return 0
        write_json(train_prior(args.model, n_components=args.components, n_check=args.n_check,
                               temperature=args.temperature, screen_samples=args.screen_samples)["metrics"])
        return 0
    if args.name == LATENT_MAP:
        from app.engine.training.latent_map import build_latent_map

        write_json(build_latent_map()["metrics"])
        return 0
    if args.name == PERIODIC_GENERATOR:
        from app.engine.training.train_periodic_generator import train_periodic_generator

        entry = train_periodic_generator(
            fresh=args.fresh, max_train=args.max_train, write_only=args.write_only,
            continue_shipped=args.continue_shipped, mp_repeat=args.mp_repeat,
            **({"beta": args.beta} if args.beta is not None else {}),
            **({"epochs": args.epochs} if args.epochs else {}),
            **({"learning_rate": args.learning_rate} if args.learning_rate else {}))
        write_json({k: v for k, v in entry["metrics"].items()})
        return 0
    if args.name == DING_MODEL:
        from app.engine.training.train_ding import train_ding

        write_json(train_ding(epochs=args.epochs, fresh=args.fresh, continue_shipped=args.continue_shipped,
                              paper_predictors=args.paper_predictors))
        return 0
    if args.name in GENERATOR_MODELS:
        from app.engine.training import train_generator

        options = {"fresh": args.fresh, **({"epochs": args.epochs} if args.epochs else {}),
                   **({"learning_rate": args.learning_rate} if args.learning_rate else {})}
        if args.name == train_generator.UNET_NAME:
            entry = train_generator.train_unet(**options)
        else:
            entry = train_generator.train_vae(
                **options, continue_shipped=args.continue_shipped,
                **({"species_weight": args.species_weight} if args.species_weight else {}))
    elif args.name == POINTNET_MODEL:
        from app.engine.training.train_pointnet import train as train_pointnet

        entry = train_pointnet(epochs=args.epochs, fresh=args.fresh, continue_shipped=args.continue_shipped,
                               learning_rate=args.learning_rate)
    else:
        from app.engine.training.train_property import train

        entry = train(args.name, epochs=args.epochs, fresh=args.fresh)
    json.dump(entry["metrics"], sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def run_evaluate(args) -> int:
    if args.name == PERIODIC_GENERATOR:
        from app.engine.training.train_periodic_generator import evaluate_periodic_generator

        report = evaluate_periodic_generator(n_per_set=args.n_reconstruct)
        if args.record:
            from app.engine.training.train_periodic_generator import record_evaluation

            record_evaluation(report, f"crystal-designer evaluate periodic-generator --n-reconstruct {args.n_reconstruct}")
        write_json(report)
        return 0
    if args.name == "hull":
        from app.engine.training.evaluate_hull import calibrate_hull_weight, evaluate_hull

        if args.calibrate:
            write_json(calibrate_hull_weight(n_calibration=args.n_held_out))
            return 0
        report = evaluate_hull(n_chgnet=args.n_held_out, n_relax=args.n_relax)
        if args.record:
            from app.engine.training.hull_builder import record_evaluation

            relax = "" if args.n_relax is None else f" --n-relax {args.n_relax}"
            report["recorded"] = record_evaluation(
                report, command=f"crystal-designer evaluate hull --n-held-out {args.n_held_out}{relax} --record")
        write_json(report)
        return 0
    if args.name == DING_MODEL:
        from app.engine.training.evaluate_ding import evaluate_ding

        from app.cli.compositions import sampling_options

        write_json(evaluate_ding(n_samples=args.n_samples, record=args.record, sampling=sampling_options(args)))
        return 0
    if args.name == "generator" and args.stability:
        from app.engine.training.evaluate_generator import evaluate_stability, held_out_perovskite_bases

        options = {"sigma": args.sigma} if args.sigma is not None else {}
        write_json(evaluate_stability(held_out_perovskite_bases(args.n_bases), n_around=args.n_around,
                                      settings_options=options))
        return 0
    if args.name == "generator":
        from app.engine.training.evaluate_generator import evaluate_generator, record_generator_metrics

        report = evaluate_generator(n_reconstruct=args.n_reconstruct, n_samples=args.n_samples,
                                    coverage_samples=args.n_coverage)
        if args.record:
            record_generator_metrics(report, f"crystal-designer evaluate generator --n-reconstruct "
                                             f"{args.n_reconstruct} --n-samples {args.n_samples}")
        if args.format == "text":
            from app.engine.training.evaluate_generator import format_generator_report

            sys.stdout.write(format_generator_report(report))
            return 0
    elif args.name == POINTNET_MODEL:
        from app.engine.training.evaluate_pointnet import compare_with_cgcnn, format_comparison

        if args.record:
            from app.engine.training.train_pointnet import record_metrics

            record_metrics()
        sys.stdout.write(format_comparison(compare_with_cgcnn()))
        return 0
    else:
        from app.engine.training.train_property import evaluate

        report = evaluate(args.name, record=args.record)
        # The parity sample (≤ 500 pairs per target) is for the window; print how many pairs it holds.
        report["parity_sample"] = {target: f"{len(pairs['true'])} of {pairs['count']} validation pairs"
                                   for target, pairs in report["parity_sample"].items()}
    write_json(report)
    return 0


def run_build_index(args) -> int:
    from app.engine.training.element_references import build_element_references
    from app.engine.training.training_index import build_structure_index, build_training_index

    print(build_element_references())
    print(build_training_index())
    print(build_structure_index())
    from app.engine.training.hull_builder import build_reference_hull

    print(build_reference_hull())
    from app.engine.training.element_references import fit_chgnet_corrections

    print(fit_chgnet_corrections())  # after the references: CHGNet-relaxed training crystals, minutes
    return 0
