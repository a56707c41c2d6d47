//! ODIN against `*_openood_postprocessors.json` (OpenOOD 3c35632 run in float64): the fixture's
//! network is `logits = flatten(x) @ odin_W^T + odin_b` on `[24, 3, 4, 4]` images. The input
//! gradient, the scores and the predictions must match. (Its own test binary: the flex device is
//! configured for float64 here, which is process-wide.)

use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use oodforge_testutil::{array, assert_close, golden_files, num};
use oodforge_train::odin::Odin;

#[test]
fn odin_matches_openood_float64() {
    let mut device = Device::flex();
    device
        .configure(burn::tensor::DeviceConfig::default().float_dtype(FloatDType::F64))
        .expect("configure float64 before any tensor exists");
    let device = device.autodiff();
    let mut checked = 0;
    for (file, fx) in golden_files("_openood_postprocessors.json") {
        let (xshape, x) = array(&fx["inputs"]["odin_inputs"]);
        let (wshape, w) = array(&fx["inputs"]["odin_W"]);
        let (_, b) = array(&fx["inputs"]["odin_b"]);
        let shape: [usize; 4] = xshape.try_into().expect("NCHW");
        let (k, d) = (wshape[0], wshape[1]);
        let wt = Tensor::<2>::from_data(TensorData::new(w, [k, d]), &device).transpose();
        let bt = Tensor::<2>::from_data(TensorData::new(b, [1, k]), &device);
        let forward = |x: Tensor<4>| -> Tensor<2> {
            let n = x.dims()[0];
            x.reshape([n, d]).matmul(wt.clone()) + bt.clone()
        };
        let r = &fx["results"]["odin"]["official_float64"];
        let args = &r["config"]["postprocessor_args"];
        let std: Vec<f64> = r["input_std"]
            .as_array()
            .expect("input_std: three numbers")
            .iter()
            .map(num)
            .collect();
        let odin = Odin {
            temperature: num(&args["temperature"]),
            noise: num(&args["noise"]),
            std: [std[0], std[1], std[2]],
        };
        let out = odin.batch(forward, &x, shape, &device);
        let tol = &fx["tolerance"]["official_float64"]["default"];
        let (rtol, atol) = (num(&tol["rtol"]), num(&tol["atol"]));
        assert_close(
            &format!("{file}/odin.input_grad"),
            &out.input_grad,
            &array(&r["input_grad"]).1,
            rtol,
            // The gradient is ~1e-7 in size (CE of logits / 1000, averaged over 24 images).
            atol * 1e-4,
        );
        assert_close(
            &format!("{file}/odin.conf"),
            &out.conf,
            &array(&r["conf"]).1,
            rtol,
            atol,
        );
        let pred: Vec<f64> = out.pred.iter().map(|&p| p as f64).collect();
        assert_eq!(pred, array(&r["pred"]).1, "{file}/odin.pred");
        checked += 1;
    }
    assert!(checked > 0, "no ODIN fixture found");
}
