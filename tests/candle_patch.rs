//! The backward pass of the vendored candle-core (vendor/README.md): the first gradient reaching
//! a tensor is stored, not added onto zeros, and a linear layer's `x.matmul(&w.t())` gets its
//! weight's gradient computed already transposed. These tests pin what the patch must keep:
//! every gradient equals the one computed by hand, sums over several uses still add up, and the
//! gradients handed out are plain contiguous tensors with their parameter's shape.

use candle_core::{DType, Device, Tensor, Var};

fn values(tensor: &Tensor) -> Vec<f64> {
    tensor
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// A fixed, irregular tensor (no generator needed): `sin` of a scaled index.
fn filled(rows: usize, columns: usize, scale: f64, device: &Device) -> Tensor {
    let data: Vec<f32> = (0..rows * columns)
        .map(|index| ((index as f64 + 1.0) * scale).sin() as f32)
        .collect();
    Tensor::from_vec(data, (rows, columns), device).unwrap()
}

fn assert_close(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "{what}[{index}]: {a} against {e}"
        );
    }
}

#[test]
fn a_linear_layer_gets_its_weight_gradient_untransposed_and_exact() {
    let device = Device::Cpu;
    // x [rows 5, in 3], w [out 4, in 3]; loss = sum(g ⊙ (x w^T)) for a fixed g [5, 4].
    let x = Var::from_tensor(&filled(5, 3, 0.7, &device)).unwrap();
    let w = Var::from_tensor(&filled(4, 3, 1.3, &device)).unwrap();
    let g = filled(5, 4, 0.37, &device);
    let y = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
    let loss = (&y * &g).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();

    let grad_w = grads.get(w.as_tensor()).expect("w has a gradient");
    assert_eq!(grad_w.dims(), &[4, 3]);
    assert!(
        grad_w.is_contiguous(),
        "the weight's gradient is contiguous"
    );
    assert_eq!(grad_w.layout().start_offset(), 0);
    // dL/dw = g^T x, dL/dx = g w.
    let expected_w = g.t().unwrap().matmul(x.as_tensor()).unwrap();
    assert_close(&values(grad_w), &values(&expected_w), "dL/dw");
    let grad_x = grads.get(x.as_tensor()).expect("x has a gradient");
    let expected_x = g.matmul(w.as_tensor()).unwrap();
    assert_close(&values(grad_x), &values(&expected_x), "dL/dx");
}

#[test]
fn gradients_of_a_tensor_used_several_times_add_up() {
    let device = Device::Cpu;
    // loss = sum(a*b) + sum(a) + sum((a w^T) ⊙ g) - sum(b): a reaches the loss three ways.
    let a = Var::from_tensor(&filled(2, 3, 0.9, &device)).unwrap();
    let b = Var::from_tensor(&filled(2, 3, 2.1, &device)).unwrap();
    let w = Var::from_tensor(&filled(4, 3, 0.4, &device)).unwrap();
    let g = filled(2, 4, 1.7, &device);
    let product = (a.as_tensor() * b.as_tensor()).unwrap().sum_all().unwrap();
    let plain = a.as_tensor().sum_all().unwrap();
    let linear = (a.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap() * &g)
        .unwrap()
        .sum_all()
        .unwrap();
    let minus = b.as_tensor().sum_all().unwrap();
    let loss = (((product + plain).unwrap() + linear).unwrap() - minus).unwrap();
    let grads = loss.backward().unwrap();

    // dL/da = b + 1 + g w; dL/db = a - 1; dL/dw = g^T a.
    let expected_a = ((b.as_tensor() + 1.0).unwrap() + g.matmul(w.as_tensor()).unwrap()).unwrap();
    assert_close(
        &values(grads.get(a.as_tensor()).unwrap()),
        &values(&expected_a),
        "dL/da",
    );
    let expected_b = (a.as_tensor() - 1.0).unwrap();
    assert_close(
        &values(grads.get(b.as_tensor()).unwrap()),
        &values(&expected_b),
        "dL/db",
    );
    let expected_w = g.t().unwrap().matmul(a.as_tensor()).unwrap();
    let grad_w = grads.get(w.as_tensor()).unwrap();
    assert!(grad_w.is_contiguous());
    assert_close(&values(grad_w), &values(&expected_w), "dL/dw");
}

#[test]
fn a_first_gradient_that_is_a_view_is_stored_as_a_fresh_contiguous_tensor() {
    let device = Device::Cpu;
    // The gradients of cat's parts are narrowed views of the output's gradient (the second at
    // an offset), and a sum's gradient is broadcast: each is stored contiguous from offset 0.
    let first = Var::from_tensor(&filled(2, 3, 0.5, &device)).unwrap();
    let second = Var::from_tensor(&filled(3, 3, 0.8, &device)).unwrap();
    let joined = Tensor::cat(&[first.as_tensor(), second.as_tensor()], 0).unwrap();
    let weights = filled(5, 3, 0.21, &device);
    let loss = (&joined * &weights).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for (var, rows, offset) in [(&first, 0..2, "first"), (&second, 2..5, "second")] {
        let gradient = grads.get(var.as_tensor()).unwrap();
        assert!(gradient.is_contiguous(), "{offset}");
        assert_eq!(gradient.layout().start_offset(), 0, "{offset}");
        let expected = weights.narrow(0, rows.start, rows.len()).unwrap();
        assert_close(&values(gradient), &values(&expected), offset);
    }

    let summed = Var::from_tensor(&filled(2, 3, 0.3, &device)).unwrap();
    let loss = summed
        .as_tensor()
        .sum_keepdim(1)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let gradient = grads.get(summed.as_tensor()).unwrap();
    assert!(gradient.is_contiguous());
    assert_eq!(gradient.layout().stride(), &[3, 1]);
    assert_eq!(values(gradient), vec![1.0; 6]);
}
